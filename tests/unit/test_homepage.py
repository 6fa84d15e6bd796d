"""The home page as rendered: content, structure, escaping, self-containedness, languages.

The languages' own rules (negotiation, catalogs) are in test_languages.py, the text of each
snippet in test_snippets.py; these tests look at the page a reader gets.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from twisted.web.template import flattenString

from dockerproxy import homepage
from dockerproxy.homepage import HomePage, MirrorInfo
from dockerproxy.languages import CATALOGS, MESSAGES_DIR, load_catalogs
from dockerproxy.snippets import PLACEHOLDER_HOST

# The messages as written in each catalog (English where one lacks a message).
_STRINGS = {code: catalog.texts for code, catalog in CATALOGS.items()}

HUB = "https://registry-1.docker.io"
REGISTRIES = {
    "docker.io": HUB,
    "ghcr.io": "https://ghcr.io",
    "quay.io": "https://quay.io",
    "registry.k8s.io": "https://registry.k8s.io",
}
ROUTES = {"hub.mirror.test": HUB, "ghcr.mirror.test": "https://ghcr.io"}


def make_info(host: str = "mirror.test:5000", scheme: str = "https", **overrides) -> MirrorInfo:
    fields = {
        "host": host,
        "scheme": scheme,
        "default_upstream": HUB,
        "default_registry": "docker.io",
        "routes": ROUTES,
        "registries": REGISTRIES,
    }
    fields.update(overrides)
    return MirrorInfo(**fields)


def render(info: MirrorInfo | None = None, lang: str = "en") -> str:
    body = homepage.render(info or make_info(), lang)
    assert isinstance(body, bytes)
    return body.decode("utf-8")


def text_of(page: str) -> str:
    """The page with tags dropped and entities decoded: what a reader sees (and copies)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


# --------------------------------------------------------------------------- content


def test_page_is_a_complete_html_document():
    page = render()
    assert page.startswith("<!doctype html>")
    # void elements are written <meta ... /> by twisted.web.template, which HTML allows
    assert re.search(r'<meta charset="utf-8"\s*/?>', page)
    assert re.search(
        r'<meta name="viewport" content="width=device-width, initial-scale=1"\s*/?>', page
    )
    assert "prefers-color-scheme:dark" in page
    assert page.rstrip().endswith("</html>")


class _TagChecker(HTMLParser):
    VOID = frozenset({"meta", "br", "wbr", "link", "img", "input", "hr"})

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        """``<br />``: the slash is allowed on void elements only (on any other element HTML
        ignores it, and the element stays open)."""
        if tag not in self.VOID:
            self.errors.append(f"<{tag} /> is not a void element")
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_tags_are_balanced_and_links_are_local(lang, scheme):
    checker = _TagChecker()
    checker.feed(render(make_info(scheme=scheme), lang))
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert len(checker.ids) == len(set(checker.ids)), "duplicate ids"
    for href in checker.hrefs:
        assert href.startswith("?lang=") or href.removeprefix("#") in checker.ids, href


def test_language_attribute_and_switch():
    en, zh = render(lang="en"), render(lang="zh")
    assert '<html lang="en">' in en
    assert '<html lang="zh-CN">' in zh
    for page in (en, zh):
        assert 'href="?lang=en"' in page
        assert 'href="?lang=zh"' in page
        assert "English" in page and "中文" in page
    assert re.search(r'href="\?lang=en"[^>]*aria-current', en)
    assert re.search(r'href="\?lang=zh"[^>]*aria-current', zh)


def test_unknown_language_renders_english():
    assert render(lang="fr") == render(lang="en")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_translated_string_is_used(lang):
    """Each language shows its own texts, and none of the other language's."""
    other = "zh" if lang == "en" else "en"
    pages = [
        render(make_info(), lang),
        render(make_info(scheme="http", host="127.0.0.1:5000"), lang),
        render(make_info(host="bad host"), lang),
        render(make_info(host="ghcr.mirror.test"), lang),
        render(make_info(default_upstream=None, default_registry=None), lang),
        render(make_info(default_upstream=None, default_registry=None, registries={}), lang),
        render(make_info(default_upstream="https://ghcr.io", default_registry="ghcr.io"), lang),
    ]
    joined = "\n".join(pages)
    seen = text_of(joined) + html.unescape(joined)  # also attributes (aria-label)
    for key, value in _STRINGS[lang].items():
        # The longest run of text between {placeholders} identifies the string.
        probe = max(re.split(r"\{\w+\}", text_of(value)), key=len)
        assert probe in seen, (lang, key)
    page = text_of(pages[0])
    for key in ("pull_title", "clients_title", "docker_intro", "podman_intro", "kind_intro"):
        assert text_of(_STRINGS[other][key]) not in page, (other, key)


def test_chinese_page_is_chinese():
    page = render(lang="zh")
    assert "通过镜像站拉取" in page
    assert "配置为镜像加速器" in page
    assert "Pull through the mirror" not in page


def test_host_is_filled_into_pull_commands():
    page = text_of(render())
    assert "docker pull mirror.test:5000/library/alpine:3.20" in page
    assert "docker pull mirror.test:5000/alpine:3.20" in page
    assert "docker tag mirror.test:5000/library/alpine:3.20 alpine:3.20" in page
    assert "<title>" not in page
    assert "mirror.test:5000 · Docker registry mirror" in page


def test_path_prefix_pulls_for_each_registry():
    page = text_of(render())
    assert "docker pull mirror.test:5000/ghcr.io/owner/image:tag" in page
    assert "docker pull mirror.test:5000/quay.io/owner/image:tag" in page
    assert "docker pull mirror.test:5000/registry.k8s.io/pause:3.10" in page
    assert "docker tag mirror.test:5000/ghcr.io/owner/image:tag ghcr.io/owner/image:tag" in page
    # the default registry is served at the root, so it gets no path-prefix example
    assert "docker pull mirror.test:5000/docker.io/" not in page


def test_no_short_name_when_default_is_not_docker_hub():
    info = make_info(default_upstream="https://ghcr.io", default_registry="ghcr.io", registries={})
    page = text_of(render(info))
    assert "docker pull mirror.test:5000/owner/image:tag" in page
    assert "docker tag mirror.test:5000/owner/image:tag ghcr.io/owner/image:tag" in page
    assert "alpine" not in page
    # Docker's registry-mirrors only works with Docker Hub as the default: explained, not shown
    assert "registry-mirrors" not in page
    assert text_of(_STRINGS["en"]["docker_not_hub"]) in page


def test_without_default_upstream_every_pull_needs_a_prefix():
    info = make_info(default_upstream=None, default_registry=None)
    page = text_of(render(info))
    assert text_of(_STRINGS["en"]["pull_no_default"]) in page
    assert "docker pull mirror.test:5000/library/alpine:3.20" not in page
    assert "docker pull mirror.test:5000/docker.io/library/alpine:3.20" in page
    assert 'location = "mirror.test:5000/docker.io"' in page


def test_nothing_to_mirror():
    info = make_info(default_upstream=None, default_registry=None, registries={}, routes={})
    page = text_of(render(info))
    assert text_of(_STRINGS["en"]["clients_none"]) in page
    assert text_of(_STRINGS["en"]["no_upstreams"]) in page
    assert "hosts.toml" not in page


def test_upstreams_and_routes_table():
    page = render(make_info(host="ghcr.mirror.test"))
    text = text_of(page)
    for name, upstream in REGISTRIES.items():
        assert name in text and upstream in text
    assert "Host routes" in text
    assert "hub.mirror.test" in text
    # the route of the Host the page is served for is marked
    routes = page.split('id="routes"', 1)[1]
    row = re.search(r"<tr>(?:(?!</tr>).)*ghcr\.mirror\.test(?:(?!</tr>).)*</tr>", routes)
    assert row and "this host" in row.group(0)
    row = re.search(r"<tr>(?:(?!</tr>).)*hub\.mirror\.test(?:(?!</tr>).)*</tr>", routes)
    assert row and "this host" not in row.group(0)
    assert page.count("this host") == 1


def test_no_routes_table_without_routes():
    assert "Host routes" not in render(make_info(routes={}))


# --------------------------------------------------------------------------- clients


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_each_client_section_is_present(lang):
    page = render(lang=lang)
    for anchor in ("pull", "registries", "upstreams", "docker", "containerd", "podman", "k3s"):
        assert f'<section id="{anchor}">' in page
        assert f'href="#{anchor}"' in page
    assert '<section id="kind">' in page


def test_docker_daemon_json():
    page = text_of(render())
    assert "/etc/docker/daemon.json" in page
    assert '"registry-mirrors": ["https://mirror.test:5000"]' in page
    assert "insecure-registries" not in page
    assert "sudo systemctl restart docker" in page


def test_docker_daemon_json_over_http_marks_the_mirror_insecure():
    page = text_of(render(make_info(scheme="http")))
    assert '"registry-mirrors": ["http://mirror.test:5000"],' in page
    assert '"insecure-registries": ["mirror.test:5000"]' in page
    assert "--tls-verify=false" in page  # the plain-HTTP hint


def test_containerd_hosts_toml():
    page = text_of(render())
    assert "/etc/containerd/certs.d/docker.io/hosts.toml" in page
    assert "/etc/containerd/certs.d/ghcr.io/hosts.toml" in page
    assert "/etc/containerd/certs.d/_default/hosts.toml" in page
    hub = (
        'server = "https://registry-1.docker.io"\n\n'
        '[host."https://mirror.test:5000"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    assert hub in page
    assert 'server = "https://ghcr.io"\n\n[host."https://mirror.test:5000"]' in page
    assert '[plugins."io.containerd.grpc.v1.cri".registry]\n' in page
    assert 'config_path = "/etc/containerd/certs.d"' in page
    assert '[plugins."io.containerd.cri.v1.images".registry]' in page
    assert "sudo systemctl restart containerd" in page


def test_podman_registries_conf():
    page = text_of(render())
    assert "/etc/containers/registries.conf" in page
    hub = (
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
        '[[registry.mirror]]\nlocation = "mirror.test:5000"\n'
    )
    assert hub in page
    assert '[[registry.mirror]]\nlocation = "mirror.test:5000/ghcr.io"\n' in page
    assert "insecure = true" not in page
    assert "insecure = true" in text_of(render(make_info(scheme="http")))


def test_k3s_registries_yaml():
    page = text_of(render())
    assert "/etc/rancher/k3s/registries.yaml" in page
    expected = (
        "mirrors:\n"
        "  docker.io:\n"
        "    endpoint:\n"
        '      - "https://mirror.test:5000"\n'
        "  ghcr.io:\n"
        "    endpoint:\n"
        '      - "https://mirror.test:5000"\n'
    )
    assert expected in page


def test_kind_config():
    page = text_of(render())
    assert "containerdConfigPatches:" in page
    assert "kind: Cluster" in page
    assert "apiVersion: kind.x-k8s.io/v1alpha4" in page
    assert "cat > certs.d/docker.io/hosts.toml <<'EOF'" in page
    assert "containerPath: /etc/containerd/certs.d" in page
    assert "kind create cluster --config kind.yaml" in page
    note = text_of(_STRINGS["en"]["kind_loopback"].split("<code>")[0])
    assert note not in page
    assert note in text_of(render(make_info(host="127.0.0.1:5000")))
    assert note in text_of(render(make_info(host="localhost:5000")))


# --------------------------------------------------------------------------- safety


@pytest.mark.parametrize(
    "host",
    [
        "<script>alert(1)</script>",
        'evil.test"><img src=x onerror=alert(1)>',
        "evil.test/<b>",
        "evil.test onmouseover=alert(1)",
        "evil.test'",
        "evil.test&lt;",
        "a" * 300,
        "",
        "   ",
    ],
)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_malicious_host_is_replaced_by_a_placeholder(host, lang):
    page = render(make_info(host=host), lang)
    assert "<script" not in page
    assert "<img" not in page
    assert "<b>" not in page
    assert "alert" not in page
    assert "onmouseover" not in page
    assert "evil.test" not in page
    assert f"docker pull {PLACEHOLDER_HOST}/library/alpine:3.20" in text_of(page)
    # and the reader is told to replace the placeholder
    assert text_of(_STRINGS[lang]["placeholder"].split("<code>")[0]) in text_of(page)


@pytest.mark.parametrize("host", ["mirror.test", "MIRROR.test:443", "127.0.0.1:5000", "[::1]:5000"])
def test_valid_hosts_are_shown(host):
    page = text_of(render(make_info(host=host)))
    assert f"docker pull {host}/library/alpine:3.20" in page
    assert PLACEHOLDER_HOST not in page


def test_configured_names_are_escaped():
    evil = "<script>alert(1)</script>"
    info = make_info(
        default_upstream=f"https://hub.test/{evil}",
        routes={f"r.test{evil}": f'https://r.test/"{evil}'},
        registries={f"reg.test{evil}": f"https://reg.test/{evil}"},
    )
    for lang in ("en", "zh"):
        page = render(info, lang)
        assert "<script" not in page
        assert "&lt;script&gt;" in page


def test_unknown_scheme_falls_back_to_https():
    page = text_of(render(make_info(scheme="javascript")))
    assert "javascript" not in page
    assert '"registry-mirrors": ["https://mirror.test:5000"]' in page


_URL = re.compile(r"(?i)\b(?:https?:)?//([a-z0-9.\-\[\]:@%]+)")


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_no_external_resources_or_links(lang, scheme):
    info = make_info(scheme=scheme)
    page = render(info, lang)
    allowed = {info.host} | {
        urlsplit(url).netloc for url in [HUB, *REGISTRIES.values(), *ROUTES.values()]
    }
    # Every URL in the page (also in decoded text) names this host or a configured upstream.
    for source in (page, text_of(page)):
        hosts = set(_URL.findall(source))
        assert hosts, "expected the mirror's own URL in the page"
        assert hosts <= allowed, hosts - allowed
    lowered = page.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "<object", "@import", "url(", "src="):
        assert needle not in lowered, needle


# --------------------------------------------------------------------------- rendering


def test_the_template_renders_synchronously():
    """render() relies on flattenString's Deferred having fired when it returns."""
    rendered = []
    flattenString(None, HomePage(make_info(), "zh")).addBoth(rendered.append)
    assert len(rendered) == 1 and isinstance(rendered[0], bytes)
    page = homepage.DOCTYPE + rendered[0].replace(b"<wbr></wbr>", b"<wbr>")
    assert homepage.render(make_info(), "zh") == page


def copy_catalogs(directory):
    for path in MESSAGES_DIR.glob("*.toml"):
        (directory / path.name).write_bytes(path.read_bytes())


def test_a_failing_render_raises_rather_than_serving_half_a_page(tmp_path):
    copy_catalogs(tmp_path)
    with (tmp_path / "en.toml").open("a", encoding="utf-8") as en:
        en.write('host = "a message named like one of the page\'s own slots"\n')
    with pytest.raises(Exception, match="clash with the page's slots: \\['host'\\]"):
        homepage.render(make_info(), "en", load_catalogs(tmp_path))


def test_a_third_language_is_offered_and_falls_back_to_english(tmp_path):
    copy_catalogs(tmp_path)
    (tmp_path / "fr.toml").write_text(
        '[language]\nname = "Français"\ntag = "fr"\n'
        '[messages]\ntitle = "Miroir de registres"\n'
        'intro = "<code>{host}</code> relaie les <em>pulls</em>."\n',
        encoding="utf-8",
    )
    page = render_with(load_catalogs(tmp_path), "fr")
    assert '<html lang="fr">' in page
    assert "<h1>Miroir de registres</h1>" in page
    assert "<code>mirror.test:5000</code> relaie les <em>pulls</em>." in page
    assert "Pull through the mirror" in page  # what fr.toml lacks is in English
    links = re.findall(
        r'<a href="\?lang=(\w+)" hreflang="([\w-]+)" lang="[\w-]+"'
        r'( aria-current="true")?>([^<]*)</a>',
        page,
    )
    assert links == [
        ("en", "en", "", "English"),
        ("fr", "fr", ' aria-current="true"', "Français"),
        ("zh", "zh-CN", "", "中文"),
    ]
    assert '<html lang="en">' in render_with(load_catalogs(tmp_path), "de")


def render_with(catalogs, lang: str) -> str:
    return homepage.render(make_info(), lang, catalogs).decode("utf-8")


def test_the_css_survives_the_flattener():
    """Text is escaped, so a > in the CSS (a child combinator) would arrive as &gt;."""
    [css] = re.findall(r"<style>(.*?)</style>", render(), re.S)
    assert "&" not in css and "<" not in css
    assert "pre code{background:none;" in css


def test_paths_in_tables_may_wrap_after_their_slashes():
    page = render()
    assert "<code>https://registry-1.docker.io</code>" in page  # not inside ://
    assert "<code>mirror.test:5000/<wbr>ghcr.io/<wbr>…</code>" in page
    assert "</wbr>" not in page
