"""The status page, C{/status}: the status document for people, in their language.

It renders L{dockerproxy.admin.status.status_document}, the same document
C{/status.json} answers, with C{templates/status.xhtml}: totals, charts drawn as
inline SVG (L{dockerproxy.admin.charts}) and tables. Its texts are catalogs like
the home page's (L{dockerproxy.languages}), in C{templates/status/}: a slot named
like a catalog key is that message. The page is self-contained: inline CSS, no
scripts, fonts, images or links to other hosts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.iweb import IRequest
from twisted.web.template import Element, Flattenable, Tag, XMLFile, flattenString, renderer, tags

from dockerproxy.admin.charts import line_chart
from dockerproxy.languages import DEFAULT_LANGUAGE, Catalog, language_links, load_catalogs

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
TEMPLATE = FilePath(str(TEMPLATES / "status.xhtml"))
STATUS_CATALOGS = load_catalogs(TEMPLATES / "status")
STATUS_LANGUAGES = tuple(STATUS_CATALOGS)
DOCTYPE = b"<!doctype html>\n"
NONE = "\u2013"  # an en dash: no value


def format_bytes(value: float | None) -> str:
    """1536 as C{1.5 KiB}: binary units, three significant digits."""
    if value is None:
        return NONE
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            break
        amount /= 1024
    if unit == "B":
        return f"{int(amount)} B"
    return f"{amount:.3g} {unit}" if amount < 1000 else f"{amount:.0f} {unit}"


def format_count(value: float | None) -> str:
    return NONE if value is None else f"{round(value):,}"


def format_ratio(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f}%"


def format_time(value: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


class StatusPage(Element):
    """The page for C{document} in C{lang} (English when there is no such catalog)."""

    loader = XMLFile(TEMPLATE)

    def __init__(
        self,
        document: Mapping[str, Any],
        lang: str,
        catalogs: Mapping[str, Catalog] = STATUS_CATALOGS,
    ) -> None:
        super().__init__()
        self.document = document
        self.catalogs = catalogs
        self.catalog = catalogs.get(lang, catalogs[DEFAULT_LANGUAGE])
        self.m = self.catalog.markup

    @renderer
    def page(self, request: IRequest | None, tag: Tag) -> Flattenable:
        generated = self.document["generated"]
        return tag.fillSlots(
            **self.m,
            html_lang=self.catalog.tag,
            generated=format_time(generated),
            generated_iso=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(generated)),
        )

    @renderer
    def language_links(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return language_links(self.catalogs, self.catalog, tag)

    @renderer
    def summary(self, request: IRequest | None, tag: Tag) -> Flattenable:
        day = self.document["last_24h"]
        cards = [
            ("requests", format_count(day["requests"])),
            ("hit_ratio", format_ratio(day["cache_hit_ratio"])),
            ("served", format_bytes(day["served_bytes"])),
            ("fetched", format_bytes(day["upstream_bytes"])),
            ("saved", format_bytes(day["saved_bytes"])),
        ]
        return tag(*(tags.div(tags.dt(self.m[key]), tags.dd(value)) for key, value in cards))

    def _figure(self, caption: str, chart: Tag, legend: Sequence[str] = ()) -> Tag:
        items = [tags.li(self.m[key], class_=f"s{i}") for i, key in enumerate(legend)]
        return tags.figure(
            tags.figcaption(self.m[caption]),
            chart,
            tags.ul(*items, class_="legend") if items else "",
        )

    @renderer
    def charts(self, request: IRequest | None, tag: Tag) -> Flattenable:
        minutes = self.document["minutes"]
        start, step = minutes["start"], minutes["step"]

        def chart(caption: str, series: list[list[Any]], fmt: Any, **kw: Any) -> Tag:
            return line_chart(self.catalog.texts[caption], series, start, step, fmt, **kw)

        figures = [
            self._figure(
                "chart_requests", chart("chart_requests", [minutes["requests"]], format_count)
            ),
            self._figure(
                "chart_hit_ratio",
                chart("chart_hit_ratio", [minutes["cache_hit_ratio"]], format_ratio, y_max=1.0),
            ),
            self._figure(
                "chart_bytes",
                chart(
                    "chart_bytes",
                    [minutes["served_bytes"], minutes["upstream_bytes"]],
                    format_bytes,
                ),
                ("legend_served", "legend_fetched"),
            ),
        ]
        limits = minutes["ratelimit_remaining"]
        if limits:
            names = list(limits)
            svg = chart("chart_ratelimit", [limits[name] for name in names], format_count)
            items = [tags.li(tags.code(name), class_=f"s{i % 5}") for i, name in enumerate(names)]
            figures.append(
                tags.figure(
                    tags.figcaption(self.m["chart_ratelimit"]),
                    svg,
                    tags.ul(*items, class_="legend"),
                )
            )
        else:
            figures.append(
                tags.figure(
                    tags.figcaption(self.m["chart_ratelimit"]),
                    tags.p(self.m["no_ratelimit"], class_="muted"),
                )
            )
        return figures

    def _table(self, headings: Sequence[tuple[str, bool]], rows: list[list[Flattenable]]) -> Tag:
        """A table; each heading is (catalog key, numeric) and numeric cells align right."""
        numeric = [n for _, n in headings]
        head = tags.tr(*(_cell(tags.th, self.m[key], n) for key, n in headings))
        body = [
            tags.tr(*(_cell(tags.td, cell, numeric[i]) for i, cell in enumerate(row)))
            for row in rows
        ]
        return tags.div(tags.table(tags.thead(head), tags.tbody(*body)), class_="table")

    @renderer
    def images(self, request: IRequest | None, tag: Tag) -> Flattenable:
        top = self.document["top_images"]
        if not top["by_pulls"] and not top["by_bytes"]:
            return tags.p(self.m["no_images"], class_="muted")
        columns = [("th_image", False), ("th_pulls", True), ("th_bytes", True)]

        def rows(entries: list[dict[str, Any]]) -> list[list[Flattenable]]:
            return [
                [tags.code(e["image"]), format_count(e["pulls"]), format_bytes(e["bytes"])]
                for e in entries
            ]

        return tags.div(
            tags.div(tags.h3(self.m["top_pulls"]), self._table(columns, rows(top["by_pulls"]))),
            tags.div(tags.h3(self.m["top_bytes"]), self._table(columns, rows(top["by_bytes"]))),
            class_="tables",
        )

    @renderer
    def fills(self, request: IRequest | None, tag: Tag) -> Flattenable:
        fills = self.document["fills"]
        if not fills:
            return tags.p(self.m["no_fills"], class_="muted")
        columns = [
            ("th_blob", False),
            ("th_written", True),
            ("th_size", True),
            ("th_followers", True),
        ]
        rows: list[list[Flattenable]] = [
            [
                tags.code(f["digest"][:19] + "…", title=f["digest"]),
                format_bytes(f["written_bytes"]),
                self.m["unknown"] if f["size_bytes"] is None else format_bytes(f["size_bytes"]),
                format_count(f["followers"]),
            ]
            for f in fills
        ]
        return self._table(columns, rows)

    @renderer
    def cache(self, request: IRequest | None, tag: Tag) -> Flattenable:
        cache = self.document["cache"]
        if cache is None:
            return tags.p(self.m["no_cache"])
        bound = cache["max_size_bytes"]
        rows: list[list[Flattenable]] = [
            [self.m["cache_used"], format_bytes(cache["size_bytes"])],
            [self.m["cache_bound"], self.m["no_bound"] if bound is None else format_bytes(bound)],
            [self.m["cache_blobs"], format_count(cache["blobs"])],
        ]
        table = tags.div(
            tags.table(tags.tbody(*(tags.tr(tags.th(k), tags.td(v, class_="n")) for k, v in rows))),
            class_="table",
        )
        if bound is None:
            return table
        meter = Tag(
            "meter", attributes={"min": "0", "max": str(bound), "value": str(cache["size_bytes"])}
        )
        meter.children.append(format_ratio(cache["size_bytes"] / bound if bound else None))
        return [meter, table]

    @renderer
    def upstreams(self, request: IRequest | None, tag: Tag) -> Flattenable:
        upstreams = self.document["upstreams"]
        if not upstreams:
            return tags.p(self.m["no_upstreams"], class_="muted")
        columns = [("th_registry", False), ("th_last_answer", False), ("th_ratelimit", True)]
        rows: list[list[Flattenable]] = [
            [
                tags.code(u["registry"]),
                NONE if u["last_answer"] is None else format_time(u["last_answer"]),
                format_count(u["ratelimit_remaining"]),
            ]
            for u in upstreams
        ]
        return self._table(columns, rows)


def _cell(kind: Tag, content: Flattenable, numeric: bool) -> Tag:
    cell = kind(content)
    if numeric:
        cell.attributes["class"] = "n"
    return cell


def render(
    document: Mapping[str, Any], lang: str, catalogs: Mapping[str, Catalog] = STATUS_CATALOGS
) -> bytes:
    """The page as UTF-8 HTML; like the home page, it renders synchronously."""
    outcome: list[bytes | Failure] = []
    flattenString(None, StatusPage(document, lang, catalogs)).addBoth(outcome.append)
    if not outcome:
        raise RuntimeError("the status page did not render synchronously")
    [result] = outcome
    if isinstance(result, Failure):
        result.raiseException()
    assert isinstance(result, bytes)
    return DOCTYPE + result
