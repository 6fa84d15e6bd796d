"""The Resource tree: C{/}, C{/v2/}, C{/v2/auth} and the registry API under C{/v2/}.

Each handler is a coroutine run with L{ensureDeferred}; C{render} returns
C{NOT_DONE_YET} and cancels the coroutine when the client goes away, so no
upstream work outlives the request it was for.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from dockerproxy import errors, names, usage
from dockerproxy.auth import (
    ANONYMOUS_TOKEN,
    Scope,
    format_bearer,
    rewrite_scopes,
    split_scopes,
)
from dockerproxy.challenges import ChallengeCache, pick_challenge
from dockerproxy.config import Credentials, UpstreamConfig
from dockerproxy.headers import (
    USER_AGENT,
    client_authorization,
    relayed_response_headers,
    upstream_request_headers,
)
from dockerproxy.relay import abort_client, relay_body
from dockerproxy.routing import Router
from dockerproxy.upstream import (
    HIDDEN_ENCODING,
    Fetched,
    UpstreamClient,
    UpstreamClients,
    discard,
)

log = Logger()

_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")
# The service named by challenges the proxy makes itself (no upstream in sight).
PROXY_SERVICE = "dockerproxy"
ANONYMOUS_TOKEN_RESPONSE = {"token": ANONYMOUS_TOKEN, "access_token": ANONYMOUS_TOKEN,
                            "expires_in": 3600}
_NS_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?")
_TOKEN_PASSTHROUGH = ("account", "client_id", "offline_token")


@dataclass
class Proxy:
    """What every resource needs: routing, the upstream clients, challenges and the clock."""

    router: Router
    clients: UpstreamClients
    challenges: ChallengeCache
    clock: IReactorTime

    def client(self, upstream: UpstreamConfig) -> UpstreamClient:
        return self.clients.for_upstream(upstream)


def request_host(request: IRequest) -> str:
    """The Host the client used, if well formed; else the address it connected to."""
    raw = request.getHeader(b"host")
    if raw:
        host = raw.decode("latin-1").strip()
        if _HOST_RE.fullmatch(host):
            return host.lower()
    address = request.getHost()
    return f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 80)}"


def base_url(request: IRequest) -> str:
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{request_host(request)}"


def request_ns(request: IRequest) -> str | None:
    """containerd's C{?ns=<registry>} on mirror requests, checked before any use."""
    values = request.args.get(b"ns")
    if not values or not values[0]:
        return None
    ns = values[0].decode("ascii", "replace").lower()
    if not _NS_RE.fullmatch(ns):
        raise errors.RegistryError(400, "NAME_INVALID", "invalid ns parameter", {"ns": ns})
    return ns


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


def respond_error(request: Request, error: errors.RegistryError) -> None:
    body = errors.write_error(request, error)
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


class JSONErrorPage(Resource):
    """A fixed registry error for any method: used for unknown paths."""

    isLeaf = True

    def __init__(self, error: errors.RegistryError) -> None:
        super().__init__()
        self.error = error

    def render(self, request: Request) -> bytes:
        body = errors.write_error(request, self.error)
        return b"" if request.method == b"HEAD" else body


class RootResource(Resource):
    """C{/}: the usage page; C{/v2}: the registry API; anything else: a JSON 404."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.putChild(b"v2", V2Resource(proxy))

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return JSONErrorPage(errors.RegistryError(404, "NOT_FOUND", "no such page"))

    def render(self, request: Request) -> int | bytes:
        # Twisted's own 405/501 pages are HTML: answer other methods in registry JSON.
        if request.method not in (b"GET", b"HEAD"):
            return refuse_method(request)
        return super().render(request)

    def render_GET(self, request: Request) -> bytes:
        router = self.proxy.router
        default = router.default
        info = usage.UsageInfo(
            host=request_host(request),
            scheme="https" if request.isSecure() else "http",
            default_upstream=default.url if default else None,
            default_registry=default.name if default else None,
            routes={host: u.url for host, u in router.routes.items()},
            registries={name: u.url for name, u in router.registries.items()},
        )
        lang_arg = request.args.get(b"lang", [b""])[0].decode("ascii", "replace")
        lang = usage.pick_language(
            (request.getHeader(b"accept-language") or b"").decode("latin-1"), lang_arg or None)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-language", lang.encode())
        request.setHeader(b"vary", b"Accept-Language")
        return usage.render_usage(info, lang)

    render_HEAD = render_GET


class V2Resource(Resource):
    """C{/v2/}: the API version check, relayed to the upstream with its challenge rewritten."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.auth = AuthResource(proxy)
        self.registry = RegistryResource(proxy)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if not request.postpath:
            if path == b"":
                return self
            if path == b"auth":
                return self.auth
        return self.registry

    def render(self, request: Request) -> int | bytes:
        if request.method not in (b"GET", b"HEAD"):
            return refuse_method(request)
        return render_async(request, lambda: self.ping(request))

    async def ping(self, request: Request) -> None:
        ns = request_ns(request)
        router = self.proxy.router
        if ns is None and router.host_route(request_host(request)) is None \
                and router.default is None and router.registries:
            # Only prefixed names can be served here, so the challenge is the proxy's
            # own: clients then ask /v2/auth with scopes that name the registry.
            challenge_locally(request)
            return
        upstream = router.upstream_for(request_host(request), ns)
        request.upstream = upstream.url  # type: ignore[attr-defined]
        fetched = await fetch_for_client(self.proxy, request, upstream, f"{upstream.url}/v2/")
        await relay_response(self.proxy, request, upstream, fetched, scope=None, ns=ns)


def challenge_locally(request: Request) -> None:
    error = errors.RegistryError(401, "UNAUTHORIZED", "authentication required")
    body = errors.write_error(request, error)
    value = format_bearer(f"{base_url(request)}/v2/auth", PROXY_SERVICE)
    request.setHeader(b"www-authenticate", value.encode("latin-1"))
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def refuse_method(request: Request) -> bytes:
    error = errors.unsupported("this proxy only serves pulls: "
                               f"{request.method.decode('ascii', 'replace')} is not supported")
    request.setHeader(b"allow", b"GET, HEAD")
    body = errors.write_error(request, error)
    return b"" if request.method == b"HEAD" else body


class RegistryResource(Resource):
    """C{/v2/<name>/manifests|blobs|tags/...}: validated, routed, and relayed."""

    isLeaf = True

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render(self, request: Request) -> int | bytes:
        if request.method not in (b"GET", b"HEAD"):
            return refuse_method(request)
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
        fetched = await fetch_for_client(self.proxy, request, target.upstream, url)
        await relay_response(self.proxy, request, target.upstream, fetched,
                             scope=f"repository:{api.name}:pull", ns=ns)


async def fetch_for_client(proxy: Proxy, request: Request, upstream: UpstreamConfig,
                           url: str) -> Fetched:
    """Make the client's request upstream, remembering any challenge it meets.

    An upstream with Basic auth (no token realm) and credentials configured for the
    proxy gets them, but only for a client that sent none.
    """
    headers = upstream_request_headers(request.requestHeaders)
    client = proxy.client(upstream)
    fetched = await client.fetch(request.method, url, headers)
    if fetched.response.code != 401:
        return fetched
    challenge = proxy.challenges.remember(upstream, fetched.response.headers)
    if (challenge is not None and challenge.scheme == "basic"
            and upstream.credentials is not None and not headers.hasHeader(b"authorization")):
        await discard(fetched.response)
        headers.setRawHeaders(b"authorization", [basic_authorization(upstream.credentials)])
        fetched = await client.fetch(request.method, url, headers)
    return fetched


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


async def relay_response(proxy: Proxy, request: Request, upstream: UpstreamConfig,
                         fetched: Fetched, scope: str | None, ns: str | None) -> None:
    """Copy status, allowed headers and body; point a 401's challenge at this proxy."""
    response = fetched.response
    request.setResponseCode(response.code)
    request.defaultContentType = None
    for name, values in relayed_response_headers(response.headers):
        request.responseHeaders.setRawHeaders(name, values)
    hidden = response.headers.getRawHeaders(HIDDEN_ENCODING)
    if hidden:
        request.responseHeaders.setRawHeaders(b"content-encoding", hidden)
    if response.code == 401:
        rewrite_challenge(request, response.headers, scope, ns)
    if request.method == b"HEAD" or response.length == 0:
        length = head_length(response.headers) if request.method == b"HEAD" else 0
        if length is not None and response.code not in (204, 304):
            request.setHeader(b"content-length", b"%d" % length)
        request.finish()
        return
    if response.length is not UNKNOWN_LENGTH:
        request.setHeader(b"content-length", b"%d" % response.length)
    relay = relay_body(response, request, proxy.clock, proxy.client(upstream).timeouts.idle)
    await relay.done


def head_length(headers: Headers) -> int | None:
    """A HEAD response's Content-Length, which describes the body a GET would get."""
    values = headers.getRawHeaders(b"content-length", [])
    if len(set(values)) == 1 and values[0].strip().isdigit():
        return int(values[0])
    return None


def rewrite_challenge(request: Request, headers: Headers, scope: str | None,
                      ns: str | None) -> None:
    """Replace a Bearer challenge's realm with this proxy's C{/v2/auth}.

    Basic challenges are relayed as they are: the client's Basic credentials then
    come to the proxy and go to the same upstream host, nowhere else.
    """
    challenge = pick_challenge(headers)
    if challenge is None or challenge.scheme != "bearer":
        values = headers.getRawHeaders(b"www-authenticate")
        if values:
            request.responseHeaders.setRawHeaders(b"www-authenticate", values)
        return
    # containerd keeps a realm's query when it adds its own parameters, so the
    # token request comes back with the ns that routed this one.
    realm = f"{base_url(request)}/v2/auth" + (f"?{urlencode({'ns': ns})}" if ns else "")
    value = format_bearer(realm, challenge.service, scope, challenge.params.get("error"))
    request.responseHeaders.setRawHeaders(b"www-authenticate", [value.encode("latin-1")])


class AuthResource(Resource):
    """C{/v2/auth}: the token endpoint clients are sent to by the rewritten challenge."""

    isLeaf = True

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render(self, request: Request) -> int | bytes:
        # Twisted's own 405/501 pages are HTML: answer other methods in registry JSON.
        if request.method not in (b"GET", b"HEAD", b"POST"):
            return refuse_method(request)
        return super().render(request)

    def render_GET(self, request: Request) -> int:
        return render_async(request, lambda: self.token(request))

    def render_POST(self, request: Request) -> bytes:
        # OAuth2 password grants are not relayed: a 404 sends clients back to GET.
        request.setResponseCode(404)
        return errors.write_error(request, errors.RegistryError(
            404, "UNSUPPORTED", "use GET for tokens from this proxy"))

    async def token(self, request: Request) -> None:
        scopes = split_scopes(v.decode("utf-8", "replace") for v in request.args.get(b"scope", []))
        upstream, to_upstream = self.token_upstream(request, scopes)
        request.upstream = upstream.url  # type: ignore[attr-defined]
        challenge = await self.proxy.challenges.get(upstream)
        if challenge is None:
            # The upstream needs no auth, but a client challenged by the proxy itself
            # still wants a token: give it one that is never forwarded.
            return respond_json(request, ANONYMOUS_TOKEN_RESPONSE)
        if challenge.scheme != "bearer" or not challenge.realm:
            raise errors.RegistryError(404, "UNSUPPORTED",
                                       f"upstream {upstream.url} does not use token auth")
        realm = challenge.realm
        if urlsplit(realm).scheme not in ("http", "https"):
            raise errors.bad_gateway(upstream.url, f"unusable token realm {realm!r}")
        query: list[tuple[str, str]] = []
        if challenge.service is not None:
            query.append(("service", challenge.service))
        for scope in rewrite_scopes(scopes, to_upstream):
            query.append(("scope", scope))
        for name in _TOKEN_PASSTHROUGH:
            for value in request.args.get(name.encode(), []):
                query.append((name, value.decode("utf-8", "replace")))
        separator = "&" if urlsplit(realm).query else "?"
        url = realm + (separator + urlencode(query) if query else "")
        headers = Headers({b"user-agent": [USER_AGENT], b"accept": [b"application/json"]})
        authorization = client_authorization(request.requestHeaders)
        if authorization is None and upstream.credentials is not None:
            authorization = basic_authorization(upstream.credentials)
        if authorization is not None:
            headers.setRawHeaders(b"authorization", [authorization])
        response, body = await self.proxy.client(upstream).get_small(url, headers)
        request.setResponseCode(response.code)
        content_type = response.headers.getRawHeaders(b"content-type", [b"application/json"])
        request.setHeader(b"content-type", content_type[0])
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

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
                        if scope is not None and scope.type.split("(")[0] == "repository"]
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


def respond_json(request: Request, document: object) -> None:
    body = json.dumps(document).encode()
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def basic_authorization(credentials: Credentials) -> bytes:
    token = f"{credentials.username}:{credentials.password}".encode()
    return b"Basic " + base64.b64encode(token)
