"""The home page's languages: choosing one for a request, and the message catalogs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from twisted.web.template import Tag, flattenString, slot

from dockerproxy.languages import (
    CATALOGS,
    DEFAULT_LANGUAGE,
    LANGUAGES,
    MESSAGES_DIR,
    PARAMETERS,
    CatalogError,
    load_catalogs,
    pick_language,
)

# --------------------------------------------------------------------------- pick_language


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("*", "en"),
        ("en", "en"),
        ("zh", "zh"),
        ("zh-CN", "zh"),
        ("zh-Hans", "zh"),
        ("zh-Hans-CN", "zh"),
        ("zh-TW", "zh"),
        ("ZH-cn", "zh"),
        ("zh_CN", "zh"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("en;q=0.5, zh-Hans;q=0.8", "zh"),
        ("en;q=0.5 , zh ; q=0.8", "zh"),
        ("fr-FR, de;q=0.9", "en"),
        ("fr, de;q=0.9, zh;q=0.3", "zh"),
        ("zh;q=0", "en"),
        ("zh;q=0, en;q=0.1", "en"),
        ("zh;q=0.000, en;q=0.001", "en"),
        ("zh;q=abc, en;q=0.5", "en"),
        ("zh;q=2, en;q=0.5", "en"),
        ("zh;q=nan", "en"),
        ("zh, en", "zh"),
        ("en, zh", "en"),
        (";;,,;q=", "en"),
    ],
)
def test_pick_language_from_accept_language(accept, expected):
    assert pick_language(accept, None) == expected


@pytest.mark.parametrize(
    ("accept", "override", "expected"),
    [
        ("zh-CN,zh;q=0.9", "en", "en"),
        ("en", "zh", "zh"),
        (None, "zh", "zh"),
        ("en", "ZH-cn", "zh"),
        ("zh", "fr", "zh"),  # an unsupported override is ignored
        ("zh", "", "zh"),
        ("zh", "<script>", "zh"),
        (None, "klingon", "en"),
    ],
)
def test_pick_language_override(accept, override, expected):
    assert pick_language(accept, override) == expected


def test_pick_language_among_the_languages_given():
    """A third catalog is a third language to negotiate, with no code change."""
    languages = ("en", "zh", "fr")
    assert pick_language("fr-FR, zh;q=0.9", None, languages) == "fr"
    assert pick_language("fr-FR, zh;q=0.9", None) == "zh"
    assert pick_language(None, "fr", languages) == "fr"
    assert pick_language("de, en;q=0.1", None, languages) == "en"


# --------------------------------------------------------------------------- the catalogs


def raw_catalogs() -> dict[str, dict]:
    """Each catalog file as written, without the loader's fallback."""
    return {
        path.stem: tomllib.loads(path.read_text(encoding="utf-8"))
        for path in sorted(MESSAGES_DIR.glob("*.toml"))
    }


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_the_languages_are_the_catalog_files():
    assert set(LANGUAGES) == set(raw_catalogs())
    assert LANGUAGES[0] == DEFAULT_LANGUAGE == "en"
    assert "zh" in LANGUAGES
    assert (CATALOGS["en"].name, CATALOGS["en"].tag) == ("English", "en")
    assert (CATALOGS["zh"].name, CATALOGS["zh"].tag) == ("中文", "zh-CN")


@pytest.mark.parametrize("code", sorted(raw_catalogs()))
def test_every_catalog_has_the_same_keys_as_english(code):
    english = raw_catalogs()["en"]["messages"]
    messages = raw_catalogs()[code]["messages"]
    assert sorted(messages.keys() - english.keys()) == [], "keys English does not have"
    assert sorted(english.keys() - messages.keys()) == [], "untranslated keys"
    assert CATALOGS[code].missing == frozenset()


@pytest.mark.parametrize("code", sorted(raw_catalogs()))
def test_every_message_names_the_placeholders_english_does(code):
    english = raw_catalogs()["en"]["messages"]
    for key, text in raw_catalogs()[code]["messages"].items():
        assert placeholders(text) == placeholders(english[key]), key
        assert placeholders(text) <= PARAMETERS, key


def test_messages_are_parsed_into_tags_and_slots():
    intro = CATALOGS["en"].markup["intro"]
    assert isinstance(intro[0], Tag) and intro[0].tagName == "code"
    [host] = intro[0].children
    assert isinstance(host, slot) and host.name == "host"
    assert intro[1].startswith(" is a pull proxy")
    hint = CATALOGS["zh"].markup["http_hint"]
    [link] = [node for node in hint if isinstance(node, Tag) and node.tagName == "a"]
    assert link.attributes == {"href": "#docker"}
    assert link.children == ["Docker"]


# --------------------------------------------------------------------------- loading

LANGUAGE = '[language]\nname = "{name}"\ntag = "{tag}"\n'


def write(
    directory: Path, code: str, messages: dict[str, str], name: str = "", tag: str = ""
) -> None:
    body = LANGUAGE.format(name=name or code, tag=tag or code) + "[messages]\n"
    body += "".join(f"{key} = '''{text}'''\n" for key, text in messages.items())
    (directory / f"{code}.toml").write_text(body, encoding="utf-8")


def flat(markup) -> bytes:
    """A message's markup flattened with its slots filled."""
    result = []
    wrapper = Tag("")(*markup).fillSlots(host="h.test", example_host="e.test")
    flattenString(None, wrapper).addBoth(result.append)
    [value] = result
    return value


def test_a_missing_message_falls_back_to_english(tmp_path):
    write(tmp_path, "en", {"hello": "Hello <code>{host}</code>", "bye": "Bye"})
    write(tmp_path, "fr", {"hello": "Bonjour <code>{host}</code>"}, name="Français")
    catalogs = load_catalogs(tmp_path)
    assert list(catalogs) == ["en", "fr"]
    french = catalogs["fr"]
    assert french.name == "Français"
    assert french.texts == {"hello": "Bonjour <code>{host}</code>", "bye": "Bye"}
    assert flat(french.markup["hello"]) == b"Bonjour <code>h.test</code>"
    assert flat(french.markup["bye"]) == b"Bye"
    assert french.missing == frozenset({"bye"})
    assert catalogs["en"].missing == frozenset()


def test_keys_english_does_not_have_are_ignored(tmp_path):
    write(tmp_path, "en", {"hello": "Hello"})
    write(tmp_path, "fr", {"hello": "Bonjour", "extra": "En plus"})
    assert set(load_catalogs(tmp_path)["fr"].texts) == {"hello"}


def test_a_new_language_is_a_new_file(tmp_path):
    for path in MESSAGES_DIR.glob("*.toml"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    write(tmp_path, "fr", {"title": "Miroir"}, name="Français", tag="fr-FR")
    catalogs = load_catalogs(tmp_path)
    assert list(catalogs) == ["en", "fr", "zh"]
    assert catalogs["fr"].texts["title"] == "Miroir"
    assert catalogs["fr"].texts["footer"] == CATALOGS["en"].texts["footer"]


def test_entities_are_xml(tmp_path):
    write(tmp_path, "en", {"amp": "A &amp; B &lt;tag&gt;"})
    assert load_catalogs(tmp_path)["en"].texts["amp"] == "A &amp; B &lt;tag&gt;"
    assert flat(load_catalogs(tmp_path)["en"].markup["amp"]) == b"A &amp; B &lt;tag&gt;"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<script>alert(1)</script>", "only text"),
        ("<b>bold</b>", "only text"),
        ('<a href="https://evil.test/">out</a>', "within the page"),
        ("<a>nowhere</a>", "within the page"),
        ('<code onclick="alert(1)">x</code>', "attributes not allowed"),
        ('<code t:render="page">x</code>', "attributes not allowed"),
        ('<code><t:attr name="onclick">x</t:attr>y</code>', "attributes not allowed"),
        ("<t:transparent>x</t:transparent>", "only text"),
        ("Hello {password}", "unknown placeholder {password}"),
        ('<t:slot name="secret"/>', "unknown placeholder {secret}"),
        ("<code>unclosed", "messages.bad"),
        ("A & B", "messages.bad"),
        ("&nbsp;", "messages.bad"),
    ],
)
def test_bad_markup_is_refused_naming_the_file_and_key(tmp_path, text, problem):
    write(tmp_path, "en", {"good": "Fine", "bad": text})
    with pytest.raises(CatalogError) as raised:
        load_catalogs(tmp_path)
    message = str(raised.value)
    assert f"{tmp_path / 'en.toml'}: messages.bad: " in message
    assert problem in message


def test_bad_markup_in_a_translation_names_that_file(tmp_path):
    write(tmp_path, "en", {"hello": "Hello"})
    write(tmp_path, "fr", {"hello": "<blink>Bonjour</blink>"})
    with pytest.raises(CatalogError, match=re.escape(f"{tmp_path / 'fr.toml'}: messages.hello")):
        load_catalogs(tmp_path)


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"zh.toml": LANGUAGE.format(name="中文", tag="zh") + "[messages]\n"}, "no en.toml"),
        ({"en.toml": "[messages]\nx = 'y'\n"}, "[language]: expected a table of strings"),
        ({"en.toml": LANGUAGE.format(name="", tag="en") + "[messages]\n"}, "language.name"),
        ({"en.toml": LANGUAGE.format(name="E", tag="en")}, "[messages]: expected a table"),
        (
            {"en.toml": LANGUAGE.format(name="E", tag="en") + "[messages]\nx = 1\n"},
            "[messages]: expected a table of strings",
        ),
        ({"en.toml": "title = "}, "en.toml: "),
        (
            {
                "en.toml": LANGUAGE.format(name="E", tag="en") + "[messages]\n",
                "zh_CN.toml": LANGUAGE.format(name="中文", tag="zh") + "[messages]\n",
            },
            "named for a language",
        ),
    ],
)
def test_unusable_catalog_files_are_refused(tmp_path, files, problem):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as raised:
        load_catalogs(tmp_path)
    assert problem in str(raised.value)
