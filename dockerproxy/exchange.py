"""One exchange with an upstream on behalf of a client request.

Shared by the resources (plain relaying) and the mirror (caching): how the
client's request is made upstream, and how the answer goes back to the client,
with the upstream's challenge pointed at this proxy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IRequest, IResponse
from twisted.web.server import Request

from dockerproxy import errors
from dockerproxy.auth import PROXY_SERVICE, Challenge, format_bearer
from dockerproxy.challenges import ChallengeCache, pick_challenge
from dockerproxy.config import Config, UpstreamConfig
from dockerproxy.edge import client_request
from dockerproxy.headers import relayed_response_headers, upstream_request_headers
from dockerproxy.relay import discard, relay_body
from dockerproxy.routing import Router
from dockerproxy.upstream import (
    HIDDEN_ENCODING,
    Fetched,
    UpstreamClient,
    UpstreamClients,
)
from dockerproxy.upstreamauth import UpstreamTokens, basic_authorization

log = Logger()

# Upstream error bodies are small JSON documents; anything larger is not one.
MAX_ERROR_BODY = 64 * 1024


@dataclass
class Proxy:
    """What every resource and the mirror need to exchange with upstreams: routing, the
    upstream clients, challenges and the clock."""

    router: Router
    clients: UpstreamClients
    challenges: ChallengeCache
    clock: IReactorTime
    # scheme://host[:port] clients are sent to (--public-url), else each request's own.
    public_url: str | None = None
    # Set when clients log in to the proxy: then it meets upstreams as itself, never
    # with a client's credentials (dockerproxy.upstreamauth).
    upstream_auth: UpstreamTokens | None = None

    def client(self, upstream: UpstreamConfig) -> UpstreamClient:
        return self.clients.for_upstream(upstream)

    def apply(self, config: Config) -> None:
        """A reload: the public URL is read per request. (The router and the upstream
        clients stay: see L{dockerproxy.reload.RestartNeeded}.)"""
        self.public_url = config.public_url


def request_host(request: IRequest) -> str:
    """The Host the client used, if well formed; else the address it connected to."""
    host = client_request(request).host
    if host is not None:
        return host
    address = request.getHost()
    return f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 80)}"


def base_url(proxy: Proxy, request: IRequest) -> str:
    """Where clients reach this proxy: C{--public-url}, else what this request used.

    Without a public URL the client's Host is reflected, so a deployment that knows
    its name should set one: then no Host header can point a challenge elsewhere.
    """
    if proxy.public_url is not None:
        return proxy.public_url
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{request_host(request)}"


def request_ns(request: IRequest) -> str | None:
    """containerd's C{?ns=<registry>} on mirror requests, validated at the edge."""
    return client_request(request).ns


async def fetch_for_client(
    proxy: Proxy,
    request: Request,
    upstream: UpstreamConfig,
    url: str,
    method: bytes | None = None,
    drop: tuple[bytes, ...] = (),
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> Fetched:
    """Make the client's request upstream, remembering any challenge it meets.

    C{method} replaces the client's (a HEAD to revalidate); C{drop} names client
    headers to leave out (a cache fill wants the whole body, not a Range), and
    C{extra} headers to set instead (the rest of a body: a Range of the proxy's).
    An upstream with Basic auth (no token realm) and credentials configured for the
    proxy gets them, but only for a client that sent none. When clients log in to the
    proxy (C{proxy.upstream_auth}), no client credential goes upstream at all: the
    proxy asks as itself.
    """
    headers = upstream_request_headers(client_request(request))
    for name in drop:
        headers.removeHeader(name)
    for name, value in extra:
        headers.setRawHeaders(name, [value])
    method = method or request.method
    client = proxy.client(upstream)
    if proxy.upstream_auth is not None:
        headers.removeHeader(b"authorization")
        fetched = await proxy.upstream_auth.fetch(client, upstream, method, url, headers)
    else:
        fetched = await client.fetch(method, url, headers)
    request.upstream_status = fetched.response.code  # type: ignore[attr-defined]
    remaining = fetched.response.headers.getRawHeaders(b"ratelimit-remaining")
    if remaining:
        log.info(
            "upstream {upstream} ratelimit-remaining: {remaining}",
            upstream=upstream.url,
            remaining=remaining[0].decode("latin-1"),
        )
    if fetched.response.code != 401 or proxy.upstream_auth is not None:
        return fetched
    challenge = proxy.challenges.remember(upstream, fetched.response.headers)
    if (
        challenge is not None
        and challenge.scheme == "basic"
        and upstream.credentials is not None
        and not headers.hasHeader(b"authorization")
    ):
        await discard(fetched.response)
        headers.setRawHeaders(b"authorization", [basic_authorization(upstream.credentials)])
        fetched = await client.fetch(method, url, headers)
        request.upstream_status = fetched.response.code  # type: ignore[attr-defined]
    return fetched


async def relay_response(
    proxy: Proxy,
    request: Request,
    upstream: UpstreamConfig,
    fetched: Fetched,
    scope: str | None,
    ns: str | None,
) -> None:
    """Copy status, allowed headers and body; point a 401's challenge at this proxy."""
    response = fetched.response
    request.setResponseCode(response.code, errors.reason_phrase(response.code))
    request.defaultContentType = None
    for name, values in relayed_response_headers(response.headers):
        request.responseHeaders.setRawHeaders(name, values)
    if response.code == 401:
        rewrite_challenge(proxy, request, response.headers, scope, ns)
    if response.code >= 400 and request.method != b"HEAD":
        await relay_error(proxy, request, upstream, response)
        return
    hidden = response.headers.getRawHeaders(HIDDEN_ENCODING)
    if hidden:
        request.responseHeaders.setRawHeaders(b"content-encoding", hidden)
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


async def relay_error(
    proxy: Proxy, request: Request, upstream: UpstreamConfig, response: IResponse
) -> None:
    """An upstream 4xx/5xx: its registry error body as it came, or, for anything else (a
    load balancer's HTML 502, a CDN's XML 403, an empty body), a registry error with the
    same status naming the upstream, so registry clients always have a message to show."""
    try:
        body = await proxy.client(upstream).read_small(response, upstream.url, MAX_ERROR_BODY)
    except errors.RegistryError as e:
        if e.status == 504:
            raise
        body = b""
    if not is_registry_error(body):
        body = errors.write_error(request, errors.upstream_status(upstream.url, response.code))
    else:
        if b"json" not in (request.responseHeaders.getRawHeaders(b"content-type") or [b""])[0]:
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def is_registry_error(body: bytes) -> bool:
    """Whether C{body} is a registry error document: C{{"errors": [...]}}."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("errors"), list)


def head_length(headers: Headers) -> int | None:
    """A HEAD response's Content-Length, which describes the body a GET would get."""
    values = headers.getRawHeaders(b"content-length", [])
    if len(set(values)) == 1 and values[0].strip().isdigit():
        return int(values[0])
    return None


def rewrite_challenge(
    proxy: Proxy, request: Request, headers: Headers, scope: str | None, ns: str | None
) -> None:
    """Replace a Bearer challenge's realm with this proxy's C{/v2/auth}.

    Basic challenges are relayed as they are: the client's Basic credentials then
    come to the proxy and go to the same upstream host, nowhere else. When clients
    log in to the proxy, every challenge is the proxy's own (the upstream refused the
    proxy itself, whatever it asked for).
    """
    challenge = pick_challenge(headers)
    if proxy.upstream_auth is not None:
        challenge = Challenge("bearer", {"service": PROXY_SERVICE})
    elif challenge is None or challenge.scheme != "bearer":
        values = headers.getRawHeaders(b"www-authenticate")
        if values:
            request.responseHeaders.setRawHeaders(b"www-authenticate", values)
        return
    # containerd keeps a realm's query when it adds its own parameters, so the
    # token request comes back with the ns that routed this one.
    realm = f"{base_url(proxy, request)}/v2/auth" + (f"?{urlencode({'ns': ns})}" if ns else "")
    value = format_bearer(realm, challenge.service, scope, challenge.params.get("error"))
    request.responseHeaders.setRawHeaders(b"www-authenticate", [value.encode("latin-1")])
