"""The Resource tree: C{/}, C{/v2/}, C{/v2/auth} and the registry API under C{/v2/}.

Handlers run as coroutines (see L{dockerproxy.rendering}); C{/v2/auth} lives in
L{dockerproxy.tokens}.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from dockerproxy import errors, homepage, languages, names, taglist
from dockerproxy.auth import (
    PROXY_SERVICE,
    format_bearer,
)
from dockerproxy.clientauth import ClientAuth
from dockerproxy.edge import client_request
from dockerproxy.exchange import (
    Proxy,
    base_url,
    fetch_for_client,
    relay_response,
    request_host,
    request_ns,
)
from dockerproxy.headers import relayed_response_headers
from dockerproxy.mirror import Mirror
from dockerproxy.policy import check_repository, start_pull
from dockerproxy.pull import Pull
from dockerproxy.referrers import referrers_query, relay_referrers
from dockerproxy.relay import discard
from dockerproxy.rendering import JSONErrorPage, PullResource, render_async, respond_error
from dockerproxy.routing import Target
from dockerproxy.search import SearchIndex, SearchResource
from dockerproxy.tokens import AuthResource
from dockerproxy.tokenservice import TokenServiceResource
from dockerproxy.upstream import Fetched

log = Logger()


class RootResource(PullResource):
    """C{/}: the usage page; C{/v2}: the registry API; C{/v1/search}: C{docker search};
    anything else: a JSON 404."""

    def __init__(
        self,
        proxy: Proxy,
        mirror: Mirror | None = None,
        client_auth: ClientAuth | None = None,
        search: SearchIndex | None = None,
    ) -> None:
        super().__init__()
        self.proxy = proxy
        self.putChild(b"v2", V2Resource(proxy, mirror, client_auth))
        self.search = SearchResource(search, client_auth)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        if path == b"v1" and request.postpath == [b"search"]:
            return self.search
        return JSONErrorPage(errors.RegistryError(404, "NOT_FOUND", "no such page"))

    def render_GET(self, request: Request) -> bytes:
        router = self.proxy.router
        default = router.default
        scheme, _, host = base_url(self.proxy, request).partition("://")
        info = homepage.MirrorInfo(
            host=host,
            scheme=scheme,
            default_upstream=default.url if default else None,
            default_registry=default.name if default else None,
            routes={host: u.url for host, u in router.routes.items()},
            registries={name: u.url for name, u in router.registries.items()},
        )
        lang_arg = request.args.get(b"lang", [b""])[0].decode("ascii", "replace")
        lang = languages.pick_language(client_request(request).accept_language, lang_arg or None)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-language", lang.encode())
        request.setHeader(b"vary", b"Accept-Language")
        return homepage.render(info, lang)

    render_HEAD = render_GET


class V2Resource(PullResource):
    """C{/v2/}: the API version check, relayed to the upstream with its challenge rewritten.

    With a C{mirror} (the pull-through cache), an upstream that is down gets the
    proxy's own challenge instead, since the cache may still serve the pull. With
    C{client_auth} (clients log in to the proxy), the proxy answers it alone and
    C{/v2/auth} is its own token service.
    """

    def __init__(
        self, proxy: Proxy, mirror: Mirror | None = None, client_auth: ClientAuth | None = None
    ) -> None:
        super().__init__()
        self.proxy = proxy
        self.mirror = mirror
        self.client_auth = client_auth
        self.auth: Resource = (
            AuthResource(proxy, mirror)
            if client_auth is None
            else TokenServiceResource(client_auth)
        )
        self.registry = RegistryResource(proxy, mirror, client_auth)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if not request.postpath:
            if path == b"":
                return self
            if path == b"auth":
                return self.auth
        return self.registry

    def render_GET(self, request: Request) -> int:
        client_auth = self.client_auth
        if client_auth is not None:
            return render_async(request, lambda: client_auth.ping(request))
        return render_async(request, lambda: self.ping(request))

    async def ping(self, request: Request) -> None:
        host, ns = request_host(request), request_ns(request)
        router = self.proxy.router
        if (
            ns is None
            and router.host_route(host) is None
            and router.default is None
            and router.registries
        ):
            # Only prefixed names can be served here, so the challenge is the proxy's
            # own: clients then ask /v2/auth with scopes that name the registry.
            challenge_locally(self.proxy, request)
            return
        upstream = router.upstream_for(host, ns)
        request.upstream = upstream.url  # type: ignore[attr-defined]
        try:
            fetched = await fetch_for_client(self.proxy, request, upstream, f"{upstream.url}/v2/")
        except errors.RegistryError as e:
            if self.mirror is None or e.status not in (502, 504):
                raise
            why = e.message
        else:
            if self.mirror is None or fetched.response.code < 500:
                await relay_response(self.proxy, request, upstream, fetched, scope=None, ns=ns)
                return
            await discard(fetched.response)
            why = f"answered {fetched.response.code}"
        # The upstream is down, but the cache may serve the pull: clients give up on a
        # failed ping, so the proxy challenges them itself (see AuthResource.token).
        log.warn(
            "ping: upstream {upstream} unavailable ({why}); challenging locally",
            upstream=upstream.url,
            why=why,
        )
        challenge_locally(self.proxy, request)


def challenge_locally(proxy: Proxy, request: Request) -> None:
    value = format_bearer(f"{base_url(proxy, request)}/v2/auth", PROXY_SERVICE)
    request.setHeader(b"www-authenticate", value.encode("latin-1"))
    respond_error(request, errors.RegistryError(401, "UNAUTHORIZED", "authentication required"))


class RegistryResource(PullResource):
    """C{/v2/<name>/manifests|blobs|tags|referrers/...}: validated, routed, and relayed, or
    served by the C{mirror} (manifests and blobs) when there is one."""

    isLeaf = True

    def __init__(
        self, proxy: Proxy, mirror: Mirror | None = None, client_auth: ClientAuth | None = None
    ) -> None:
        super().__init__()
        self.proxy = proxy
        self.mirror = mirror
        self.client_auth = client_auth

    def render_GET(self, request: Request) -> int:
        return render_async(request, lambda: self.serve(request))

    async def serve(self, request: Request) -> None:
        try:
            path = request.path.decode("ascii")
        except UnicodeDecodeError:
            raise errors.name_invalid(request.path.decode("latin-1")) from None
        api = names.parse_api_path(path)
        if api.kind == "uploads":
            raise errors.unsupported("this proxy only serves pulls: uploads are not supported")
        ns = request_ns(request)
        target = self.proxy.router.resolve(request_host(request), api.name, ns)
        if self.client_auth is not None:
            await self.client_auth.authorize(request, api.name, target)
        check_repository(request, target.upstream.name, target.repository)
        if api.kind == "blobs" and request.method == b"GET":
            start_pull(request)
        request.upstream = target.upstream.url  # type: ignore[attr-defined]
        request.image = f"{target.upstream.name}/{target.repository}"  # type: ignore[attr-defined]
        url = f"{target.upstream.url}/v2/{target.repository}/{api.kind}/"
        if api.kind == "referrers":
            url += f"{api.reference}{referrers_query(request)}"
            await relay_referrers(self.proxy, Pull.routed(request, api, target, url, ns))
            return
        url += f"{api.reference}" if api.reference else "list" + tags_query(request)
        pull = Pull.routed(request, api, target, url, ns)
        if self.mirror is not None and pull.reference is not None:
            await self.mirror.serve(pull)
            return
        fetched = await fetch_for_client(self.proxy, request, target.upstream, url)
        if api.kind == "tags":
            await self.tag_list(request, target, fetched, api.name, ns)
            return
        await relay_response(self.proxy, request, target.upstream, fetched, scope=pull.scope, ns=ns)

    async def tag_list(
        self, request: Request, target: Target, fetched: Fetched, client_name: str, ns: str | None
    ) -> None:
        """A tag list (paging links included) naming the repository as the client does
        (C{ghcr.io/owner/image} for C{owner/image}, C{busybox} for C{library/busybox})."""
        response = fetched.response
        links = response.headers.getRawHeaders(b"link")
        if links:
            response.headers.setRawHeaders(
                b"link", taglist.rewrite_links(links, target.repository, client_name, ns)
            )
        if response.code != 200 or request.method != b"GET":
            scope = f"repository:{client_name}:pull"
            await relay_response(self.proxy, request, target.upstream, fetched, scope, ns)
            return
        body = await self.proxy.client(target.upstream).read_small(
            response, target.upstream.url, taglist.MAX_TAG_LIST
        )
        body = taglist.rename_body(body, client_name)
        request.defaultContentType = None
        for name, values in relayed_response_headers(response.headers):
            request.responseHeaders.setRawHeaders(name, values)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()


def tags_query(request: Request) -> str:
    """The tag list's paging parameters, passed on only when well formed."""
    params = []
    n = request.args.get(b"n", [b""])[0]
    if n.isdigit() and len(n) <= 6:
        params.append(("n", n.decode()))
    last = request.args.get(b"last", [b""])[0].decode("ascii", "replace")
    if last and names.TAG_RE.fullmatch(last):
        params.append(("last", last))
    return "?" + urlencode(params) if params else ""
