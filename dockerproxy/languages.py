"""The home page's languages: message catalogs, and choosing one for a request.

One catalog per language in ``templates/messages/``, named for the language
(``en.toml``, ``zh.toml``): the languages the page offers are the files present, so adding
one is adding a file. English is the reference: a message missing from another catalog is
shown in English rather than breaking the page.

The catalogs are TOML rather than JSON because they are written by people: comments can
tell a translator what a message is for, a long sentence can be wrapped over several lines
(a multi-line string with line-ending backslashes), and :mod:`tomllib` is in the standard
library (the project's config file is TOML too).

A message is text with a little markup, parsed once here into twisted.web.template objects:
``<code>``, ``<em>`` and ``<a href="#anchor">`` (links within the page), and the
placeholders in :data:`PARAMETERS` written as ``{host}``, which become slots the page fills
(so their values are escaped by the flattener, never pasted into markup). Anything else is a
:class:`CatalogError` naming the file and the message.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax import SAXParseException

from twisted.web.template import TEMPLATE_NAMESPACE, Flattenable, Tag, XMLString, slot

__all__ = [
    "CATALOGS",
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "MESSAGES_DIR",
    "PARAMETERS",
    "Catalog",
    "CatalogError",
    "load_catalogs",
    "pick_language",
]

MESSAGES_DIR = Path(__file__).parent / "templates" / "messages"
DEFAULT_LANGUAGE = "en"
# The values a message may name, as {host}: filled in by the home page.
PARAMETERS = frozenset({"host", "example_host"})

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_CODE = re.compile(r"[a-z]{2,3}")  # a primary language subtag: what Accept-Language is matched on
_INLINE = frozenset({"code", "em", "a"})


class CatalogError(ValueError):
    """A catalog file that cannot be used: the message names the file and the key."""


@dataclass(frozen=True)
class Catalog:
    """One language's messages, each as its source text and as template markup."""

    code: str  # the file's name and ?lang= value, e.g. "zh"
    name: str  # the language's own name for itself, e.g. "中文"
    tag: str  # the HTML lang attribute, e.g. "zh-CN"
    texts: Mapping[str, str]  # key -> message as written, English where this one lacks it
    markup: Mapping[str, list[Flattenable]]  # key -> the message parsed, same keys as texts
    missing: frozenset[str]  # English keys this catalog does not have


def _parse_message(text: str) -> list[Flattenable]:
    """The message as template objects: its placeholders as slots, its markup as tags."""
    xml = _PLACEHOLDER.sub(r'<t:slot name="\1"/>', text)
    wrapped = f'<t:transparent xmlns:t="{TEMPLATE_NAMESPACE}">{xml}</t:transparent>'
    [root] = XMLString(wrapped).load()
    assert isinstance(root, Tag)
    _check_markup(root.children)
    return root.children


def _check_markup(nodes: list[Flattenable]) -> None:
    """Refuse anything but text, the inline tags and known slots: a catalog cannot add
    renderers, attributes that run or load anything, or links off the page."""
    for node in nodes:
        if isinstance(node, str):
            continue
        if isinstance(node, slot):
            if node.name not in PARAMETERS:
                raise ValueError(f"unknown placeholder {{{node.name}}}")
            continue
        if not isinstance(node, Tag) or node.tagName not in _INLINE:
            raise ValueError(f'only text and <code>, <em>, <a href="#…"> allowed: {node!r}')
        allowed = {"href"} if node.tagName == "a" else set()
        attributes = set(node.attributes)
        if node.render is not None or attributes - allowed:
            raise ValueError(f"attributes not allowed on <{node.tagName}>: {node.attributes}")
        href = node.attributes.get("href")
        if node.tagName == "a" and not (isinstance(href, str) and href.startswith("#")):
            raise ValueError(f'<a> needs href="#anchor" (a link within the page), got {href!r}')
        _check_markup(node.children)


def _read(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A catalog file's ``[language]`` and ``[messages]`` tables, checked for shape."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise CatalogError(f"{path}: {e}") from e
    tables = {}
    for table in ("language", "messages"):
        value = data.get(table)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise CatalogError(f"{path}: [{table}]: expected a table of strings")
        tables[table] = value
    for key in ("name", "tag"):
        if not tables["language"].get(key):
            raise CatalogError(f"{path}: language.{key}: missing")
    return tables["language"], tables["messages"]


def load_catalogs(directory: Path) -> dict[str, Catalog]:
    """Every ``*.toml`` catalog in ``directory`` by language code, English first."""
    files = {path.stem: path for path in sorted(directory.glob("*.toml"))}
    if DEFAULT_LANGUAGE not in files:
        raise CatalogError(f"{directory}: no {DEFAULT_LANGUAGE}.toml, the reference catalog")
    english: dict[str, str] = {}
    catalogs = {}
    for code in [DEFAULT_LANGUAGE, *(c for c in files if c != DEFAULT_LANGUAGE)]:
        path = files[code]
        if not _CODE.fullmatch(code):
            raise CatalogError(f"{path}: a catalog is named for a language, like zh.toml")
        language, messages = _read(path)
        if code == DEFAULT_LANGUAGE:
            english = messages
        texts = {key: messages.get(key, english_text) for key, english_text in english.items()}
        markup = {}
        for key, text in texts.items():
            try:
                markup[key] = _parse_message(text)
            except (ValueError, SAXParseException) as e:
                source = path if key in messages else files[DEFAULT_LANGUAGE]
                raise CatalogError(f"{source}: messages.{key}: {e}") from e
        catalogs[code] = Catalog(
            code,
            language["name"],
            language["tag"],
            texts,
            markup,
            frozenset(english) - frozenset(messages),
        )
    return catalogs


CATALOGS = load_catalogs(MESSAGES_DIR)
LANGUAGES = tuple(CATALOGS)


def _language_of(tag: str, languages: Collection[str]) -> str | None:
    """Map a language tag (en, en-US, zh, zh-CN, zh-Hans, ...) to one of ``languages``."""
    primary = tag.strip().lower().replace("_", "-").split("-", 1)[0]
    return primary if primary in languages else None


def pick_language(
    accept_language: str | None, override: str | None, languages: Collection[str] = LANGUAGES
) -> str:
    """Return a code from ``languages`` (by default the catalogs installed).

    ``override`` (the ``?lang=`` query parameter) wins when it names a supported language;
    otherwise the supported language with the highest q-value in ``Accept-Language`` is
    chosen (the earliest on a tie), and English when there is none.
    """
    if override:
        chosen = _language_of(override, languages)
        if chosen:
            return chosen
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for item in (accept_language or "").split(","):
        tag, *params = item.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if not 0.0 < q <= 1.0:  # q=0 means "not acceptable"; also rejects nan and junk
            continue
        chosen = _language_of(tag, languages)
        if chosen and q > best_q:
            best, best_q = chosen, q
    return best


def language_links(
    catalogs: Mapping[str, Catalog], current: Catalog, tag: Tag
) -> list[Flattenable]:
    """One copy of C{tag} per catalog, the current language marked, separated by dots
    (the language switch of the home page and the status page)."""
    links: list[Flattenable] = []
    for catalog in catalogs.values():
        link = tag.clone().fillSlots(
            lang_code=catalog.code, lang_tag=catalog.tag, lang_name=catalog.name
        )
        if catalog is current:
            link.attributes["aria-current"] = "true"
        links += [" · ", link] if links else [link]
    return links
