"""A proxy Site driven with raw HTTP bytes over a StringTransport, and its fake upstream.

The upstream registry, its token realm and a CDN are one twisted.web Resource
(L{FakeUpstream}) behind treq's StubTreq, dispatching on the Host header; a few
tests use L{ScriptedHTTP} instead, whose Deferreds the test controls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from dockerproxy.cache.diskio import Pool
from dockerproxy.config import CacheConfig, Config, build_config
from dockerproxy.exchange import Proxy
from dockerproxy.mirror import Mirror
from dockerproxy.services import CacheService
from dockerproxy.site import ProxySite
from dockerproxy.wiring import make_mirror, make_proxy, make_s3, make_search, make_site
from tests.unit.fakes import SyncPool

HUB_HOST = "registry-1.docker.io"
AUTH_HOST = "auth.test"
CDN_HOST = "cdn.test"
MIRROR = "mirror.test:5000"
SERVICE = "registry.docker.io"
DIGEST = "sha256:" + "ab" * 32
HUB_CHALLENGE = f'Bearer realm="https://{AUTH_HOST}/token",service="{SERVICE}"'
UNAUTHORIZED = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}\n'
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}'
DOCKERD_ACCEPT = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
]


def make_parts(
    config: Config,
    clock: Clock,
    http: Any,
    pool: Pool | None = None,
    redis: Any = None,
    shared: bool = False,
) -> tuple[Proxy, Mirror | None, ProxySite]:
    """What servicetree.service_for wires, over C{http}: the upstream exchange, the mirror (when the
    config caches; with its S3 tier when it has one; its disk work on C{pool}, by default
    done at once; its cache started as its CacheService does; C{shared}: as a worker's,
    one of several on its directory) and the Site. With C{redis} (a
    L{tests.unit.fakeredis.FakeRedis}), the instance is in a fleet over it, its calls made
    at once."""
    proxy, _ = make_proxy(config, clock, http=http)
    s3 = make_s3(config, clock, None, http=http)
    fleet = None
    if redis is not None:
        from dockerproxy.fleet.wiring import make_fleet

        cache = config.cache
        fleet = make_fleet(
            "redis://redis.test",
            "fleet:",
            0.5,
            clock,
            cache.stale_max_age,
            s3,
            redis=redis,
            pool=SyncPool(),
        )
    mirror = make_mirror(config.cache, clock, proxy, pool or SyncPool(), s3, fleet, shared=shared)
    if mirror is not None:
        CacheService(mirror).startService()
    return proxy, mirror, make_site(proxy, clock, mirror=mirror, search=make_search(config, proxy))


# --------------------------------------------------------------------------- the upstream side


@dataclass
class Seen:
    """One request as the upstream side received it."""

    method: str
    host: str
    path: str
    query: dict[str, list[str]]
    headers: Headers

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode())
        return None if values is None else ",".join(v.decode("latin-1") for v in values)


Handler = Callable[[Request], bytes]


def reply(code: int = 200, body: bytes = b"", **headers: str) -> Handler:
    """A handler answering C{code}, C{body} and headers (underscores become dashes)."""

    def handle(request: Request) -> bytes:
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name.replace("_", "-"), value)
        return body

    return handle


def redirect(location: str, code: int = 307) -> Handler:
    return reply(code, b"redirecting", location=location)


class FakeUpstream(Resource):
    """The upstream registry, its token realm and a CDN: handlers keyed by (host, path)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.handlers: dict[tuple[str, str], Handler] = {
            (HUB_HOST, "/v2/"): reply(
                401, UNAUTHORIZED, www_authenticate=HUB_CHALLENGE, content_type="application/json"
            ),
            (AUTH_HOST, "/token"): self.token,
        }

    def on(self, host: str, path: str, handler: Handler) -> None:
        self.handlers[(host, path)] = handler

    def render(self, request: Request) -> bytes:
        host = (request.getHeader(b"host") or b"").decode()
        path = request.path.decode()
        query = {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()}
        self.seen.append(
            Seen(request.method.decode(), host, path, query, request.requestHeaders.copy())
        )
        handler = self.handlers.get((host, path))
        if handler is None:
            request.setResponseCode(404)
            return b'{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}'
        return handler(request)

    def token(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {"token": "tok", "scope": [s.decode() for s in request.args.get(b"scope", [])]}
        ).encode()

    def requests_to(self, host: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.host == host]


@dataclass
class Call:
    method: str
    url: str
    headers: Headers
    kwargs: dict[str, Any]
    result: defer.Deferred[Any]


class ScriptedHTTP:
    """A treq-like client whose request() returns a Deferred the test fires (or never does).

    By default the Deferred never fires and records its cancellation in C{cancelled}.
    """

    def __init__(self, outcome: Callable[[], defer.Deferred[Any]] | None = None) -> None:
        self.outcome = outcome or (lambda: defer.Deferred(self.cancelled.append))
        self.calls: list[Call] = []
        self.cancelled: list[defer.Deferred[Any]] = []

    def request(
        self, method: str, url: str, headers: Headers | None = None, **kwargs: Any
    ) -> defer.Deferred[Any]:
        d = self.outcome()
        self.calls.append(Call(method, url, headers or Headers(), kwargs, d))
        return d


# --------------------------------------------------------------------------- the client side


@dataclass
class Response:
    """A response as the client read it from the wire."""

    status: int
    headers: Headers
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode())
        return None if values is None else ",".join(v.decode("latin-1") for v in values)

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(raw: bytes, method: str) -> Response:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"incomplete response headers: {raw!r}"
    status_line, *lines = head.split(b"\r\n")
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(b":")
        headers.addRawHeader(name.strip(), value.strip())
    status = int(status_line.split(b" ")[1])
    if method == "HEAD" or status in (204, 304):
        return Response(status, headers, b"", raw)
    length = headers.getRawHeaders(b"content-length")
    if length is not None:
        body = rest[: int(length[0])]
        assert len(body) == int(length[0]), f"truncated body: {raw!r}"
        return Response(status, headers, body, raw)
    assert headers.getRawHeaders(b"transfer-encoding") == [b"chunked"], raw
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return Response(status, headers, body, raw)


class ProxyTestCase(SynchronousTestCase):
    """A proxy Site with a fake upstream, and helpers to send it requests."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = FakeUpstream()
        self.stub = StubTreq(self.upstream)
        self.access: list[LogEvent] = []
        observer = self._observe_access
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.use(build_config({}, {}))

    def _observe_access(self, event: LogEvent) -> None:
        if event.get("log_namespace") == "dockerproxy.access":
            self.access.append(event)

    def use(self, config: Config, http: Any = None) -> None:
        # The relay without the cache: the mirror has tests of its own.
        config = replace(config, cache=CacheConfig(directory=None))
        self.proxy, self.mirror, self.site = make_parts(config, self.clock, http or self.stub)

    def send(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        host: str | None = MIRROR,
    ) -> StringTransport:
        """Send one request; return the client transport (the response may still come)."""
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        lines = [f"{method} {path} HTTP/1.1"]
        if host is not None:
            lines.append(f"Host: {host}")
        lines += [f"{name}: {value}" for name, value in headers or []]
        if method in ("PUT", "POST", "PATCH"):
            lines.append("Content-Length: 0")
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.pump()
        return transport

    def pump(self) -> None:
        for _ in range(5):
            self.stub.flush()

    def fetch(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        host: str | None = MIRROR,
    ) -> Response:
        transport = self.send(method, path, headers, host)
        return parse_response(transport.value(), method)

    def assertRegistryError(self, response: Response, status: int, code: str) -> dict[str, Any]:
        self.assertEqual(response.status, status)
        self.assertEqual(response.header("content-type"), "application/json; charset=utf-8")
        self.assertNotIn(b"Traceback", response.raw)
        document = response.json()
        self.assertEqual(len(document["errors"]), 1)
        entry = document["errors"][0]
        self.assertEqual(entry["code"], code)
        self.assertIsInstance(entry["message"], str)
        return entry
