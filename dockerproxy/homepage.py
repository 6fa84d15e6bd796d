"""The home page served at ``/``: how to pull through this mirror, in the reader's language.

It explains how to pull through the mirror and gives copy-paste configuration for Docker,
containerd, podman / CRI-O, k3s and kind, filled in with the address the client used (or
``--public-url``). :class:`HomePage` renders ``templates/home.xhtml`` with
twisted.web.template: the texts are the language's messages (:mod:`dockerproxy.languages`),
the commands and files come from :mod:`dockerproxy.snippets`, and every value reaches the
page as a string or a tag that the flattener escapes; nothing is pasted into markup.

The template's conventions: a slot named like a catalog key (``pull_intro``) is that
message; ``host`` and ``example_host`` are the addresses messages name; ``code_*`` slots are
snippets; ``t:render="if:NAME"`` keeps an element only when the condition ``NAME`` of
:attr:`HomePage.conditions` holds, ``unless:NAME`` only when it does not. The page is
self-contained (inline CSS; no scripts, fonts, images or links to other hosts), and since
the flattener escapes all text, its CSS must not use ``&``, ``<`` or ``>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.iweb import IRequest
from twisted.web.template import Element, Flattenable, Tag, XMLFile, flattenString, renderer, tags

from dockerproxy import snippets
from dockerproxy.languages import CATALOGS, DEFAULT_LANGUAGE, Catalog, language_links
from dockerproxy.snippets import DOCKER_HUB, PLACEHOLDER_HOST, MirrorInfo

__all__ = ["HomePage", "MirrorInfo", "render"]

TEMPLATE = FilePath(__file__).sibling("templates").child("home.xhtml")
DOCTYPE = b"<!doctype html>\n"  # the template loader drops DTDs, so the page adds its own

# A slash where a long path may wrap: not the two of "://".
_PATH_SLASH = re.compile(r"(?<!/)/(?!/)")


def _code(text: str) -> Tag:
    """``text`` as inline code that prefers to wrap after a path's slashes."""
    children: list[Flattenable] = []
    for i, part in enumerate(_PATH_SLASH.split(text)):
        children += [part] if i == 0 else ["/", tags.wbr(), part]
    return tags.code(*children)


class HomePage(Element):
    """The page for one request: ``info`` in the language ``lang`` (English if unknown),
    offering every language of ``catalogs``."""

    loader = XMLFile(TEMPLATE)

    def __init__(
        self, info: MirrorInfo, lang: str, catalogs: Mapping[str, Catalog] = CATALOGS
    ) -> None:
        super().__init__()
        self.info = info
        self.catalogs = catalogs
        self.catalog = catalogs.get(lang, catalogs[DEFAULT_LANGUAGE])
        self.mirror = snippets.address(info.host, info.scheme)
        self.targets = snippets.targets(info)
        self.upstreams = self._upstream_rows()
        default = bool(info.default_upstream)
        hub = default and info.default_registry == DOCKER_HUB
        self.conditions = {
            "placeholder": self.mirror.is_placeholder,  # the Host could not be shown
            "http": self.mirror.scheme == "http",
            "default": default,  # names without a registry go somewhere
            "hub_default": hub,  # ... to Docker Hub: short names, Docker's registry-mirrors
            "other_default": default and not hub and bool(info.default_registry),
            "prefixes": any(target.path for target in self.targets),
            "upstreams": bool(self.upstreams),
            "routes": bool(info.routes),
            "targets": bool(self.targets),  # anything a client can mirror
            "loopback": snippets.is_loopback(self.mirror.host),
        }

    def lookupRenderMethod(self, name: str) -> Callable[[IRequest | None, Tag], Flattenable]:
        """``if:NAME`` and ``unless:NAME`` keep their tag or drop it; anything else is a
        ``@renderer`` method (an unknown name raises ``MissingRenderMethod``)."""
        kind, colon, condition = name.partition(":")
        if colon and kind in ("if", "unless") and condition in self.conditions:
            keep = self.conditions[condition] == (kind == "if")
            return lambda request, tag: tag if keep else ""
        return super().lookupRenderMethod(name)

    @renderer
    def page(self, request: IRequest | None, tag: Tag) -> Flattenable:
        """Fill the slots the whole page shares: the messages and the snippets."""
        values = {
            "html_lang": self.catalog.tag,
            "host": self.mirror.host,
            "example_host": PLACEHOLDER_HOST,
            **self._snippets(),
        }
        clash = values.keys() & self.catalog.markup.keys()
        if clash:
            raise ValueError(f"catalog keys clash with the page's slots: {sorted(clash)}")
        return tag.fillSlots(**self.catalog.markup, **values)

    def _snippets(self) -> dict[str, str]:
        info, mirror, host = self.info, self.mirror, self.mirror.host
        image = snippets.example_image(info.default_registry)
        short = snippets.hub_short_name(image)
        return {
            "code_pull": snippets.docker_pull(host, image),
            "code_pull_short": snippets.docker_pull(host, short),
            "code_tag_short": snippets.docker_tag(host, image, short),
            "code_tag": snippets.docker_tag(host, image, f"{info.default_registry}/{image}"),
            "code_prefixed_pulls": snippets.prefixed_pulls(host, self.targets),
            "code_prefixed_tags": snippets.prefixed_tags(host, self.targets),
            "code_daemon_json": snippets.daemon_json(mirror),
            "code_restart_docker": snippets.restart("docker"),
            "default_hosts_toml_path": snippets.hosts_toml_path("_default"),
            "code_default_hosts_toml": snippets.hosts_toml(mirror, None),
            "code_containerd_config": snippets.containerd_config(),
            "code_containerd_config_v3": snippets.containerd_config(snippets.CONTAINERD_CRI_V3),
            "code_restart_containerd": snippets.restart("containerd"),
            "code_ctr_pull": snippets.ctr_pull(self.targets[0]) if self.targets else "",
            "code_registries_conf": snippets.registries_conf(mirror, self.targets),
            "code_k3s_registries_yaml": snippets.k3s_registries_yaml(mirror, self.targets),
            "code_restart_k3s": snippets.restart("k3s"),
            "code_kind_script": snippets.kind_script(mirror, self.targets),
        }

    @renderer
    def language_links(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return language_links(self.catalogs, self.catalog, tag)

    def _badge(self, key: str) -> list[Flattenable]:
        return [" ", tags.span(self.catalog.markup[key], class_="badge")]

    def _upstream_rows(self) -> list[tuple[Flattenable, Flattenable, Flattenable]]:
        """(registry, upstream, how to pull) for the default upstream and each registry."""
        info, host = self.info, self.mirror.host
        rows: list[tuple[Flattenable, Flattenable, Flattenable]] = []
        if info.default_upstream:
            pull_as: list[Flattenable] = [_code(f"{host}/…")]
            if info.default_registry in info.registries:
                pull_as += [tags.br(), _code(f"{host}/{info.default_registry}/…")]
            name = [_code(info.default_registry or "—"), *self._badge("default")]
            rows.append((name, _code(info.default_upstream), pull_as))
        for registry, upstream in info.registries.items():
            if info.default_upstream and registry == info.default_registry:
                continue
            rows.append((_code(registry), _code(upstream), _code(f"{host}/{registry}/…")))
        return rows

    @renderer
    def upstream_rows(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return [
            tag.clone().fillSlots(registry=registry, upstream=upstream, pull_as=pull_as)
            for registry, upstream, pull_as in self.upstreams
        ]

    @renderer
    def route_rows(self, request: IRequest | None, tag: Tag) -> Flattenable:
        """Each Host route; the one this page is served for is marked."""
        rows = []
        for route_host, upstream in self.info.routes.items():
            here = route_host.lower() == self.mirror.host.lower()
            name = [_code(route_host), *(self._badge("this_host") if here else [])]
            rows.append(tag.clone().fillSlots(route_host=name, upstream=_code(upstream)))
        return rows

    @renderer
    def hosts_toml_files(self, request: IRequest | None, tag: Tag) -> Flattenable:
        """containerd's ``hosts.toml`` for each registry, captioned with where it goes."""
        return [
            tag.clone().fillSlots(
                path=snippets.hosts_toml_path(target.registry),
                code_hosts_toml=snippets.hosts_toml(self.mirror, target.upstream),
            )
            for target in self.targets
        ]


def render(info: MirrorInfo, lang: str, catalogs: Mapping[str, Catalog] = CATALOGS) -> bytes:
    """The home page for ``info`` in ``lang``, as UTF-8 HTML.

    ``flattenString`` returns a Deferred, but it has already fired when it returns: nothing
    in the template or its renderers waits on anything (no Deferreds, no coroutines). That
    lets ``render_GET`` return the page as bytes, with a Content-Length; a render that did
    not finish at once would be a bug, and raises rather than serving half a page.
    """
    outcome: list[bytes | Failure] = []
    flattenString(None, HomePage(info, lang, catalogs)).addBoth(outcome.append)
    if not outcome:
        raise RuntimeError("the home page template did not render synchronously")
    [result] = outcome
    if isinstance(result, Failure):
        result.raiseException()
    assert isinstance(result, bytes)
    # twisted.web.template's list of void elements misspells "wbr", so it closes one with
    # </wbr>, which HTML parsers reject. Content and attributes are always escaped, so the
    # sequence can only come from a wbr tag.
    return DOCTYPE + result.replace(b"<wbr></wbr>", b"<wbr>")
