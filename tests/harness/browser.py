"""Headless Chromium as a user's browser: the DOM it built, the text it shows, screenshots.

Every ``load()`` uses a fresh profile (no cache, no cookies, no language preferences) and a
HOME and TMPDIR of its own below the browser's work directory, and kills whatever it left
running (chromium's crash handlers start sessions of their own, so they are found by the
work directory on their command line).
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

from tests.harness.engines import engine_env, kill_processes_naming, run, tool

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Page:
    """What the browser made of a URL: its DOM serialised, and what a reader sees of it."""

    url: str
    dom: str
    lang: str = ""
    title: str = ""
    text: str = ""  # the body's visible text, whitespace collapsed
    ids: set[str] = field(default_factory=set)
    headings: list[str] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)  # attributes plus "text"

    def link(self, **attrs: str) -> str:
        """The absolute URL of the first link with all of ``attrs`` (e.g. ``hreflang="zh-CN"``)."""
        for link in self.links:
            if all(link.get(name) == value for name, value in attrs.items()):
                return urljoin(self.url, link["href"])
        raise AssertionError(f"no link with {attrs} in {self.url}: {self.links}")


class _PageParser(HTMLParser):
    """Collects the visible body text, the title, ids, headings and links."""

    HIDDEN = frozenset({"style", "script", "template", "noscript"})
    BLOCKS = frozenset(
        {
            "address",
            "article",
            "aside",
            "blockquote",
            "br",
            "dd",
            "div",
            "dl",
            "dt",
            "figcaption",
            "figure",
            "footer",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "header",
            "hr",
            "li",
            "main",
            "nav",
            "ol",
            "p",
            "pre",
            "section",
            "table",
            "td",
            "th",
            "tr",
            "ul",
        }
    )

    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.stack: list[str] = []
        self.text: list[str] = []
        self.title: list[str] = []
        self.heading: list[str] | None = None
        self.link: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "html":
            self.page.lang = values.get("lang", "")
        if "id" in values:
            self.page.ids.add(values["id"])
        if tag in ("h1", "h2", "h3", "h4"):
            self.heading = []
        if tag == "a" and "href" in values:
            self.link = {**values, "text": ""}
        if tag in self.BLOCKS:
            self.text.append(" ")
        if tag not in ("br", "wbr", "meta", "link", "img", "input", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS:
            self.text.append(" ")
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass
        if tag in ("h1", "h2", "h3", "h4") and self.heading is not None:
            self.page.headings.append(" ".join("".join(self.heading).split()))
            self.heading = None
        if tag == "a" and self.link is not None:
            self.link["text"] = " ".join(self.link["text"].split())
            self.page.links.append(self.link)
            self.link = None

    def handle_data(self, data: str) -> None:
        if "title" in self.stack:
            self.title.append(data)
        if "body" not in self.stack or self.HIDDEN.intersection(self.stack):
            return
        self.text.append(data)
        if self.heading is not None:
            self.heading.append(data)
        if self.link is not None:
            self.link["text"] += data


def parse_page(url: str, dom: str) -> Page:
    page = Page(url, dom)
    parser = _PageParser(page)
    parser.feed(dom)
    parser.close()
    page.text = " ".join("".join(parser.text).split())
    page.title = " ".join("".join(parser.title).split())
    return page


class Chromium:
    """Loads pages in headless Chromium; state below ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = tool("chromium") or "chromium"

    def load(
        self,
        url: str,
        *,
        screenshot: Path | None = None,
        window_size: tuple[int, int] = (412, 2000),
        args: tuple[str, ...] = (),
        timeout: float = 90.0,
    ) -> Page:
        """``chromium --headless --dump-dom URL`` (plus ``--screenshot`` to save a PNG)."""
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))
        argv = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={run_dir / 'profile'}", *args]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.unlink(missing_ok=True)
            argv += [
                f"--screenshot={screenshot}",
                f"--window-size={window_size[0]},{window_size[1]}",
            ]
        argv += ["--dump-dom", url]
        try:
            result = run(argv, env=engine_env(run_dir), timeout=timeout)
        finally:
            kill_processes_naming(run_dir)
        (run_dir / "chromium.log").write_text(result.describe(limit=200_000))
        return parse_page(url, result.stdout)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; AssertionError if it is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG: {head[:8]!r}"
    assert head[12:16] == b"IHDR", f"{path}: no IHDR chunk first"
    width, height = struct.unpack(">II", head[16:24])
    return width, height
