"""The Resource tree: C{/}, C{/v2/}, C{/v2/auth} and the registry API under C{/v2/}.

Each handler is a coroutine run with L{ensureDeferred}; C{render} returns
C{NOT_DONE_YET} and cancels the coroutine when the client goes away, so no
upstream work outlives the request it was for.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from dockerproxy import errors, homepage, languages, names, taglist
from dockerproxy.auth import (
    ANONYMOUS_TOKEN,
    Scope,
    format_bearer,
    rewrite_scopes,
    split_scopes,
)
from dockerproxy.config import UpstreamConfig
from dockerproxy.edge import client_request
from dockerproxy.exchange import (
    Proxy,
    base_url,
    basic_authorization,
    fetch_for_client,
    relay_response,
    request_host,
    request_ns,
)
from dockerproxy.headers import USER_AGENT, relayed_response_headers
from dockerproxy.mirror import Mirror
from dockerproxy.pull import Pull
from dockerproxy.relay import abort_client, discard
from dockerproxy.routing import Target
from dockerproxy.upstream import Fetched

log = Logger()

# The service named by challenges the proxy makes itself (no upstream in sight).
PROXY_SERVICE = "dockerproxy"
ANONYMOUS_TOKEN_RESPONSE = {"token": ANONYMOUS_TOKEN, "access_token": ANONYMOUS_TOKEN,
                            "expires_in": 3600}
_TOKEN_PASSTHROUGH = ("account", "client_id", "offline_token")


def render_async(request: Request, handler: Callable[[], Awaitable[None]]) -> int:
    """Run C{handler} for C{request}; turn its errors into registry JSON errors."""
    d = ensureDeferred(handler())
    request.notifyFinish().addErrback(lambda _: d.cancel())
    d.addErrback(_fail_request, request)
    return NOT_DONE_YET


def _fail_request(failure: Failure, request: Request) -> None:
    if failure.check(CancelledError) or request._disconnected:
        return
    if failure.check(errors.RegistryError):
        error = failure.value
    else:
        log.failure("unexpected error handling {method} {path}", failure,
                    method=request.method, path=request.path)
        error = errors.RegistryError(500, "UNKNOWN", "internal proxy error")
    if request.startedWriting:
        abort_client(request)
        return
    respond_error(request, error)


def error_page(request: Request, error: errors.RegistryError) -> bytes:
    """Set C{error}'s status and headers; return its body, empty for HEAD."""
    body = errors.write_error(request, error)
    return b"" if request.method == b"HEAD" else body


def respond_error(request: Request, error: errors.RegistryError) -> None:
    request.write(error_page(request, error))
    request.finish()


class JSONErrorPage(Resource):
    """A fixed registry error for any method: used for unknown paths."""

    isLeaf = True

    def __init__(self, error: errors.RegistryError) -> None:
        super().__init__()
        self.error = error

    def render(self, request: Request) -> bytes:
        return error_page(request, self.error)


class PullResource(Resource):
    """A resource answering C{methods}; other methods get a registry JSON 405.

    Twisted's own 405/501 pages are HTML, which registry clients cannot show.
    """

    methods: tuple[bytes, ...] = (b"GET", b"HEAD")

    def render(self, request: Request) -> int | bytes:
        if request.method not in self.methods:
            return refuse_method(request)
        return super().render(request)


class RootResource(PullResource):
    """C{/}: the usage page; C{/v2}: the registry API; anything else: a JSON 404."""

    def __init__(self, proxy: Proxy, mirror: Mirror | None = None) -> None:
        super().__init__()
        self.proxy = proxy
        self.putChild(b"v2", V2Resource(proxy, mirror))

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
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
        lang = languages.pick_language(
            client_request(request).accept_language, lang_arg or None)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-language", lang.encode())
        request.setHeader(b"vary", b"Accept-Language")
        return homepage.render(info, lang)

    render_HEAD = render_GET


class V2Resource(PullResource):
    """C{/v2/}: the API version check, relayed to the upstream with its challenge rewritten.

    With a C{mirror} (the pull-through cache), an upstream that is down gets the
    proxy's own challenge instead, since the cache may still serve the pull.
    """

    def __init__(self, proxy: Proxy, mirror: Mirror | None = None) -> None:
        super().__init__()
        self.proxy = proxy
        self.mirror = mirror
        self.auth = AuthResource(proxy, mirror)
        self.registry = RegistryResource(proxy, mirror)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if not request.postpath:
            if path == b"":
                return self
            if path == b"auth":
                return self.auth
        return self.registry

    def render_GET(self, request: Request) -> int:
        return render_async(request, lambda: self.ping(request))

    async def ping(self, request: Request) -> None:
        host, ns = request_host(request), request_ns(request)
        router = self.proxy.router
        if ns is None and router.host_route(host) is None \
                and router.default is None and router.registries:
            # Only prefixed names can be served here, so the challenge is the proxy's
            # own: clients then ask /v2/auth with scopes that name the registry.
            challenge_locally(self.proxy, request)
            return
        upstream = router.upstream_for(host, ns)
        request.upstream = upstream.url  # type: ignore[attr-defined]
        try:
            fetched = await fetch_for_client(self.proxy, request, upstream,
                                             f"{upstream.url}/v2/")
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
        log.warn("ping: upstream {upstream} unavailable ({why}); challenging locally",
                 upstream=upstream.url, why=why)
        challenge_locally(self.proxy, request)


def challenge_locally(proxy: Proxy, request: Request) -> None:
    value = format_bearer(f"{base_url(proxy, request)}/v2/auth", PROXY_SERVICE)
    request.setHeader(b"www-authenticate", value.encode("latin-1"))
    respond_error(request, errors.RegistryError(401, "UNAUTHORIZED", "authentication required"))


def refuse_method(request: Request) -> bytes:
    error = errors.unsupported("this proxy only serves pulls: "
                               f"{request.method.decode('ascii', 'replace')} is not supported")
    request.setHeader(b"allow", b"GET, HEAD")
    return error_page(request, error)


class RegistryResource(PullResource):
    """C{/v2/<name>/manifests|blobs|tags/...}: validated, routed, and relayed, or served by
    the C{mirror} (manifests and blobs) when there is one."""

    isLeaf = True

    def __init__(self, proxy: Proxy, mirror: Mirror | None = None) -> None:
        super().__init__()
        self.proxy = proxy
        self.mirror = mirror

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
        request.upstream = target.upstream.url  # type: ignore[attr-defined]
        url = f"{target.upstream.url}/v2/{target.repository}/{api.kind}/"
        url += f"{api.reference}" if api.reference else "list" + tags_query(request)
        pull = Pull.routed(request, api, target, url, ns)
        if self.mirror is not None and pull.reference is not None:
            await self.mirror.serve(pull)
            return
        fetched = await fetch_for_client(self.proxy, request, target.upstream, url)
        if api.kind == "tags":
            await self.tag_list(request, target, fetched, api.name, ns)
            return
        await relay_response(self.proxy, request, target.upstream, fetched, scope=pull.scope,
                             ns=ns)

    async def tag_list(self, request: Request, target: Target, fetched: Fetched,
                       client_name: str, ns: str | None) -> None:
        """A tag list (paging links included) naming the repository as the client does
        (C{ghcr.io/owner/image} for C{owner/image}, C{busybox} for C{library/busybox})."""
        response = fetched.response
        links = response.headers.getRawHeaders(b"link")
        if links:
            response.headers.setRawHeaders(
                b"link", taglist.rewrite_links(links, target.repository, client_name, ns))
        if response.code != 200 or request.method != b"GET":
            scope = f"repository:{client_name}:pull"
            await relay_response(self.proxy, request, target.upstream, fetched, scope, ns)
            return
        body = await self.proxy.client(target.upstream).read_small(
            response, target.upstream.url, taglist.MAX_TAG_LIST)
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


class AuthResource(PullResource):
    """C{/v2/auth}: the token endpoint clients are sent to by the rewritten challenge."""

    isLeaf = True
    methods = (b"GET", b"HEAD", b"POST")

    def __init__(self, proxy: Proxy, mirror: Mirror | None = None) -> None:
        super().__init__()
        self.proxy = proxy
        self.mirror = mirror

    def render_GET(self, request: Request) -> int:
        return render_async(request, lambda: self.token(request))

    def render_POST(self, request: Request) -> bytes:
        # OAuth2 password grants are not relayed: a 404 sends clients back to GET.
        return error_page(request, errors.RegistryError(
            404, "UNSUPPORTED", "use GET for tokens from this proxy"))

    async def token(self, request: Request) -> None:
        scopes = split_scopes(v.decode("utf-8", "replace") for v in request.args.get(b"scope", []))
        upstream, to_upstream = self.token_upstream(request, scopes)
        request.upstream = upstream.url  # type: ignore[attr-defined]
        try:
            await self.relay_token(request, upstream, scopes, to_upstream)
        except errors.RegistryError as e:
            if e.status not in (502, 504) or not self.offline_token(request, upstream, e.message):
                raise

    def offline_token(self, request: Request, upstream: UpstreamConfig, why: str) -> bool:
        """The upstream's token service is unreachable: with a cache, a client that sent no
        credentials gets the proxy's anonymous token (never forwarded), which reads what the
        cache serves anyone, i.e. public repositories. True when answered so."""
        if self.mirror is None or client_request(request).authorization is not None:
            return False
        log.warn("token: upstream {upstream} unavailable ({why}); anonymous token from the proxy",
                 upstream=upstream.url, why=why)
        respond_json(request, {**ANONYMOUS_TOKEN_RESPONSE, "expires_in": 60})
        return True

    async def relay_token(self, request: Request, upstream: UpstreamConfig, scopes: list[str],
                          to_upstream: Callable[[str], str]) -> None:
        challenge = await self.proxy.challenges.get(upstream)
        if challenge is None:
            # The upstream needs no auth, but a client challenged by the proxy itself
            # still wants a token: give it one that is never forwarded.
            return respond_json(request, ANONYMOUS_TOKEN_RESPONSE)
        if challenge.scheme != "bearer" or not challenge.realm:
            raise errors.RegistryError(404, "UNSUPPORTED",
                                       f"upstream {upstream.url} does not use token auth")
        realm = challenge.realm
        realm_parts = urlsplit(realm)
        if realm_parts.scheme not in ("http", "https"):
            raise errors.bad_gateway(upstream.url, f"unusable token realm {realm!r}")
        query: list[tuple[str, str]] = []
        if challenge.service is not None:
            query.append(("service", challenge.service))
        for scope in rewrite_scopes(scopes, to_upstream):
            query.append(("scope", scope))
        for name in _TOKEN_PASSTHROUGH:
            for value in request.args.get(name.encode(), []):
                query.append((name, value.decode("utf-8", "replace")))
        separator = "&" if realm_parts.query else "?"
        url = realm + (separator + urlencode(query) if query else "")
        headers = Headers({b"user-agent": [USER_AGENT], b"accept": [b"application/json"]})
        authorization = client_request(request).authorization
        if authorization is None and upstream.credentials is not None:
            authorization = basic_authorization(upstream.credentials)
        if authorization is not None:
            headers.setRawHeaders(b"authorization", [authorization])
        response, body = await self.proxy.client(upstream).get_small(url, headers)
        if response.code >= 500 and self.offline_token(request, upstream,
                                                       f"the realm answered {response.code}"):
            return
        if response.code == 200 and authorization is None:
            self.note_anonymous_token(body)
        if response.code != 200 and not is_json(body):
            # A realm's HTML error page: the client gets a registry error, same status.
            respond_error(request, errors.upstream_status(realm_parts.netloc, response.code))
            return
        request.setResponseCode(response.code, errors.reason_phrase(response.code))
        content_type = response.headers.getRawHeaders(b"content-type", [b"application/json"])
        respond_body(request, body, content_type[0])

    def note_anonymous_token(self, body: bytes) -> None:
        """A token the upstream issued with no credentials at all: the mirror's access rules
        count its bearer as anonymous (a repository it reads is public)."""
        if self.mirror is None:
            return
        try:
            document = json.loads(body)
            expires_in = float(document.get("expires_in") or 60)
            tokens = {document.get("token"), document.get("access_token")}
        except (ValueError, TypeError, AttributeError):
            return
        for token in tokens:
            if isinstance(token, str) and token:
                self.mirror.access.note_anonymous_token(token, expires_in)

    def token_upstream(self, request: Request,
                       scopes: list[str]) -> tuple[UpstreamConfig, Callable[[str], str]]:
        """The upstream a token request is for, and how its scope names map there.

        C{ns} (carried in the realm) decides for containerd; otherwise the
        repository scopes do, through the same routing as the API paths.
        """
        router = self.proxy.router
        host = request_host(request)
        ns = request_ns(request)
        repositories = [scope.name for scope in map(Scope.parse, scopes)
                        if scope is not None and scope.is_repository]
        for name in repositories:
            if not names.is_valid_name(name):
                raise errors.name_invalid(name)
        targets = {name: router.resolve(host, name, ns) for name in repositories}
        upstreams = {(t.upstream.name, t.upstream.url): t.upstream for t in targets.values()}
        if len(upstreams) > 1:
            raise errors.RegistryError(400, "DENIED",
                                       "one token cannot cover repositories on several upstreams",
                                       {"upstreams": sorted(u.url for u in upstreams.values())})
        if upstreams:
            [upstream] = upstreams.values()
        else:
            upstream = router.upstream_for(host, ns)
        return upstream, lambda name: targets[name].repository


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def respond_json(request: Request, document: object) -> None:
    respond_body(request, json.dumps(document).encode(), b"application/json")


def respond_body(request: Request, body: bytes, content_type: bytes) -> None:
    """A token response: never stored by a cache between client and proxy."""
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()

