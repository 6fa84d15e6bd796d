"""The whole Site, driven with raw HTTP bytes over a StringTransport.

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
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from dockerproxy.config import DOCKER_HUB_URL, CacheConfig, Config, build_config
from dockerproxy.heap import TRIM_DELAY, HeapTrimmer
from dockerproxy.tap import make_proxy, make_site

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
            (HUB_HOST, "/v2/"): reply(401, UNAUTHORIZED, www_authenticate=HUB_CHALLENGE,
                                      content_type="application/json"),
            (AUTH_HOST, "/token"): self.token,
        }

    def on(self, host: str, path: str, handler: Handler) -> None:
        self.handlers[(host, path)] = handler

    def render(self, request: Request) -> bytes:
        host = (request.getHeader(b"host") or b"").decode()
        path = request.path.decode()
        query = {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()}
        self.seen.append(Seen(request.method.decode(), host, path, query,
                              request.requestHeaders.copy()))
        handler = self.handlers.get((host, path))
        if handler is None:
            request.setResponseCode(404)
            return b'{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}'
        return handler(request)

    def token(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"token": "tok", "scope": [s.decode() for s in
                                                      request.args.get(b"scope", [])]}).encode()

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

    def request(self, method: str, url: str, headers: Headers | None = None,
                **kwargs: Any) -> defer.Deferred[Any]:
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
        body = rest[:int(length[0])]
        assert len(body) == int(length[0]), f"truncated body: {raw!r}"
        return Response(status, headers, body, raw)
    assert headers.getRawHeaders(b"transfer-encoding") == [b"chunked"], raw
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2:]
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
        self.proxy, _ = make_proxy(config, self.clock, http=http or self.stub)
        self.site = make_site(self.proxy, self.clock)

    def send(self, method: str, path: str, headers: list[tuple[str, str]] | None = None,
             host: str | None = MIRROR) -> StringTransport:
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

    def fetch(self, method: str, path: str, headers: list[tuple[str, str]] | None = None,
              host: str | None = MIRROR) -> Response:
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


# --------------------------------------------------------------------------- /v2/ and challenges


class PingTests(ProxyTestCase):
    def test_challenge_points_at_the_proxy(self) -> None:
        response = self.fetch("GET", "/v2/")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header("www-authenticate"),
                         f'Bearer realm="http://{MIRROR}/v2/auth",service="{SERVICE}"')

    def test_challenge_uses_the_host_header(self) -> None:
        response = self.fetch("GET", "/v2/", host="Other.Example")
        self.assertEqual(response.header("www-authenticate"),
                         f'Bearer realm="http://other.example/v2/auth",service="{SERVICE}"')

    def test_upstream_body_is_kept(self) -> None:
        response = self.fetch("GET", "/v2/")
        self.assertEqual(response.body, UNAUTHORIZED)
        self.assertEqual(response.header("content-type"), "application/json")

    def test_upstream_is_asked_for_v2(self) -> None:
        self.fetch("GET", "/v2/")
        [seen] = self.upstream.seen
        self.assertEqual((seen.method, seen.host, seen.path), ("GET", HUB_HOST, "/v2/"))

    def test_v2_without_slash(self) -> None:
        self.assertEqual(self.fetch("GET", "/v2").status, 401)

    def test_ping_without_auth(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", reply(200, b"{}",
                                                 docker_distribution_api_version="registry/2.0"))
        response = self.fetch("GET", "/v2/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"{}")
        self.assertEqual(response.header("docker-distribution-api-version"), "registry/2.0")
        self.assertIsNone(response.header("www-authenticate"))

    def test_basic_challenge_is_relayed_as_is(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", reply(401, b"", www_authenticate='Basic realm="r"'))
        self.assertEqual(self.fetch("GET", "/v2/").header("www-authenticate"), 'Basic realm="r"')

    def test_manifest_head_challenge_has_the_client_scope(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/manifests/latest", reply(
            401, UNAUTHORIZED,
            www_authenticate=HUB_CHALLENGE + ',scope="repository:library/busybox:pull"'))
        response = self.fetch("HEAD", "/v2/busybox/manifests/latest")
        self.assertEqual(response.status, 401)
        self.assertEqual(
            response.header("www-authenticate"),
            f'Bearer realm="http://{MIRROR}/v2/auth",service="{SERVICE}",'
            'scope="repository:busybox:pull"')
        self.assertEqual(self.upstream.seen[-1].method, "HEAD")

    def test_challenge_error_is_kept(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/manifests/latest", reply(
            401, UNAUTHORIZED, www_authenticate=HUB_CHALLENGE + ',error="insufficient_scope"'))
        value = self.fetch("GET", "/v2/busybox/manifests/latest").header("www-authenticate")
        self.assertIn('error="insufficient_scope"', value or "")
        self.assertIn('scope="repository:busybox:pull"', value or "")


# --------------------------------------------------------------------------- the edge


class EdgeTests(ProxyTestCase):
    """A request the proxy cannot read unambiguously reaches no resource and no upstream."""

    def test_two_authorization_headers_get_a_400_before_any_upstream_request(self) -> None:
        for path in ("/v2/", "/v2/auth?scope=repository:library/alpine:pull",
                     f"/v2/library/alpine/blobs/{DIGEST}", "/v2/library/alpine/manifests/3",
                     "/v2/library/alpine/tags/list", "/"):
            response = self.fetch("GET", path, [("Authorization", "Bearer valid"),
                                                ("Authorization", "Basic Og==")])
            entry = self.assertRegistryError(response, 400, "INVALID_REQUEST")
            self.assertIn("authorization", entry["message"])
        self.assertEqual(self.upstream.seen, [])

    def test_two_host_headers_get_a_400(self) -> None:
        response = self.fetch("GET", "/v2/", [("Host", "evil.test")])
        self.assertRegistryError(response, 400, "INVALID_REQUEST")
        self.assertEqual(self.upstream.seen, [])

    def test_head_gets_the_status_without_a_body(self) -> None:
        response = self.fetch("HEAD", "/v2/library/alpine/manifests/3",
                              [("Range", "bytes=0-1"), ("Range", "bytes=5-6")])
        self.assertEqual((response.status, response.body), (400, b""))


# --------------------------------------------------------------------------- /v2/auth


class TokenTests(ProxyTestCase):
    def token_request(self) -> Seen:
        [seen] = self.upstream.requests_to(AUTH_HOST)
        return seen

    def test_token_request_goes_to_the_upstream_realm(self) -> None:
        response = self.fetch("GET", "/v2/auth?service=mirror&scope=repository:busybox:pull")
        self.assertEqual(response.status, 200)
        seen = self.token_request()
        self.assertEqual(seen.path, "/token")
        self.assertEqual(seen.query["service"], [SERVICE])
        self.assertEqual(seen.query["scope"], ["repository:library/busybox:pull"])

    def test_token_response_is_relayed(self) -> None:
        response = self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        self.assertEqual(response.json(), {"token": "tok",
                                           "scope": ["repository:library/busybox:pull"]})
        self.assertEqual(response.header("content-type"), "application/json")
        self.assertEqual(response.header("cache-control"), "no-store")

    def test_every_scope_is_forwarded(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:busybox:pull"
                          "&scope=repository:bitnami/redis:pull+repository:alpine:pull"
                          "&scope=registry:catalog:*")
        self.assertEqual(self.token_request().query["scope"], [
            "repository:library/busybox:pull", "repository:bitnami/redis:pull",
            "repository:library/alpine:pull", "registry:catalog:*"])

    def test_a_failing_challenge_lookup_is_not_remembered(self) -> None:
        """A 503 from the upstream's /v2/ says nothing about its auth: ask again next time."""
        self.upstream.on(HUB_HOST, "/v2/", reply(503, b"down"))
        failed = self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        self.assertRegistryError(failed, 502, "UNAVAILABLE")
        self.upstream.on(HUB_HOST, "/v2/", reply(401, UNAUTHORIZED,
                                                 www_authenticate=HUB_CHALLENGE))
        self.assertEqual(self.fetch("GET", "/v2/auth?scope=repository:busybox:pull").status, 200)

    def test_passthrough_parameters(self) -> None:
        self.fetch("GET", "/v2/auth?account=me&client_id=docker&offline_token=true&evil=1")
        query = self.token_request().query
        self.assertEqual(query["account"], ["me"])
        self.assertEqual(query["client_id"], ["docker"])
        self.assertEqual(query["offline_token"], ["true"])
        self.assertNotIn("evil", query)

    def test_basic_authorization_is_forwarded(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:busybox:pull",
                   [("Authorization", "Basic dXNlcjpwYXNz")])
        self.assertEqual(self.token_request().header("authorization"), "Basic dXNlcjpwYXNz")

    def test_anonymous_authorization_is_not_forwarded(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:busybox:pull",
                   [("Authorization", "Basic Og==")])
        self.assertIsNone(self.token_request().header("authorization"))

    def test_cookies_are_not_forwarded(self) -> None:
        self.fetch("GET", "/v2/auth", [("Cookie", "session=secret")])
        self.assertIsNone(self.token_request().header("cookie"))

    def test_challenge_is_fetched_once(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        self.fetch("GET", "/v2/auth?scope=repository:b:pull")
        self.assertEqual(len(self.upstream.requests_to(HUB_HOST)), 1)
        self.assertEqual(len(self.upstream.requests_to(AUTH_HOST)), 2)

    def test_challenge_seen_by_ping_is_reused(self) -> None:
        self.fetch("GET", "/v2/")
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        self.assertEqual([s.path for s in self.upstream.requests_to(HUB_HOST)], ["/v2/"])

    def test_challenge_is_fetched_again_after_its_ttl(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        self.clock.advance(self.proxy.challenges.ttl + 1)
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        self.assertEqual(len(self.upstream.requests_to(HUB_HOST)), 2)

    def test_head_token_request(self) -> None:
        response = self.fetch("HEAD", "/v2/auth?scope=repository:a:pull")
        self.assertEqual(response.status, 200)
        self.assertTrue(response.raw.endswith(b"\r\n\r\n"))

    def test_realm_with_a_query(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", reply(
            401, www_authenticate=f'Bearer realm="https://{AUTH_HOST}/token?x=1",service="s"'))
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        query = self.token_request().query
        self.assertEqual(query["x"], ["1"])
        self.assertEqual(query["service"], ["s"])

    def test_token_errors_are_relayed(self) -> None:
        self.upstream.on(AUTH_HOST, "/token", reply(401, b'{"details":"bad credentials"}',
                                                    content_type="application/json"))
        response = self.fetch("GET", "/v2/auth", [("Authorization", "Basic eDp5")])
        self.assertEqual(response.status, 401)
        self.assertEqual(response.json(), {"details": "bad credentials"})

    def test_upstream_without_token_auth_gets_a_token_never_forwarded(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", reply(200, b"{}"))
        response = self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        self.assertEqual(response.status, 200)
        token = response.json()["token"]
        self.assertEqual(self.upstream.requests_to(AUTH_HOST), [])
        self.upstream.on(HUB_HOST, "/v2/library/busybox/manifests/1", reply(200, b"{}"))
        self.fetch("GET", "/v2/busybox/manifests/1", [("Authorization", f"Bearer {token}")])
        self.assertIsNone(self.upstream.seen[-1].header("authorization"))

    def test_post_is_a_json_404(self) -> None:
        response = self.fetch("POST", "/v2/auth")
        self.assertRegistryError(response, 404, "UNSUPPORTED")
        self.assertEqual(self.upstream.seen, [])

    def test_put_is_a_json_error(self) -> None:
        response = self.fetch("PUT", "/v2/auth")
        self.assertRegistryError(response, 405, "UNSUPPORTED")


# --------------------------------------------------------------------------- registry API


class RegistryTests(ProxyTestCase):
    MANIFEST_PATH = "/v2/library/busybox/manifests/latest"

    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(HUB_HOST, self.MANIFEST_PATH, reply(
            200, MANIFEST, content_type="application/vnd.oci.image.index.v1+json",
            docker_content_digest=DIGEST, etag=f'"{DIGEST}"', set_cookie="session=1",
            ratelimit_remaining="99;w=21600", x_upstream_secret="1"))

    def test_short_name_gets_library_prefix_upstream(self) -> None:
        response = self.fetch("GET", "/v2/busybox/manifests/latest")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, MANIFEST)
        [seen] = self.upstream.seen
        self.assertEqual((seen.method, seen.host, seen.path), ("GET", HUB_HOST,
                                                               self.MANIFEST_PATH))

    def test_not_modified_has_no_content_length(self) -> None:
        self.upstream.on(HUB_HOST, self.MANIFEST_PATH, reply(304, etag=f'"{DIGEST}"'))
        response = self.fetch("GET", self.MANIFEST_PATH, [("If-None-Match", f'"{DIGEST}"')])
        self.assertEqual(response.status, 304)
        self.assertIsNone(response.header("content-length"))

    def test_full_name_is_kept(self) -> None:
        self.assertEqual(self.fetch("GET", self.MANIFEST_PATH).body, MANIFEST)
        self.assertEqual(self.upstream.seen[0].path, self.MANIFEST_PATH)

    def test_response_headers(self) -> None:
        response = self.fetch("GET", "/v2/busybox/manifests/latest")
        self.assertEqual(response.header("docker-content-digest"), DIGEST)
        self.assertEqual(response.header("etag"), f'"{DIGEST}"')
        self.assertEqual(response.header("ratelimit-remaining"), "99;w=21600")
        self.assertEqual(response.header("content-type"),
                         "application/vnd.oci.image.index.v1+json")
        self.assertEqual(response.header("content-length"), str(len(MANIFEST)))
        self.assertIsNone(response.header("set-cookie"))
        self.assertIsNone(response.header("x-upstream-secret"))

    def test_accept_lines_are_merged(self) -> None:
        self.fetch("GET", "/v2/busybox/manifests/latest",
                   [("Accept", value) for value in DOCKERD_ACCEPT])
        [seen] = self.upstream.seen
        self.assertEqual(seen.headers.getRawHeaders(b"accept"),
                         [", ".join(DOCKERD_ACCEPT).encode()])

    def test_request_headers(self) -> None:
        self.fetch("GET", "/v2/busybox/manifests/latest",
                   [("Authorization", "Bearer tok"), ("If-None-Match", f'"{DIGEST}"'),
                    ("Cookie", "a=b"), ("X-Secret", "1"), ("User-Agent", "docker/27")])
        [seen] = self.upstream.seen
        self.assertEqual(seen.header("authorization"), "Bearer tok")
        self.assertEqual(seen.header("if-none-match"), f'"{DIGEST}"')
        self.assertIsNone(seen.header("cookie"))
        self.assertIsNone(seen.header("x-secret"))
        self.assertTrue((seen.header("user-agent") or "").startswith("dockerproxy/"))

    def test_anonymous_authorization_is_not_sent_upstream(self) -> None:
        self.fetch("GET", "/v2/busybox/manifests/latest", [("Authorization", "Basic Og==")])
        self.assertIsNone(self.upstream.seen[0].header("authorization"))

    def test_head_stays_head(self) -> None:
        response = self.fetch("HEAD", "/v2/busybox/manifests/latest")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.upstream.seen[0].method, "HEAD")
        self.assertEqual(response.header("content-length"), str(len(MANIFEST)))
        self.assertEqual(response.header("docker-content-digest"), DIGEST)
        self.assertTrue(response.raw.endswith(b"\r\n\r\n"))

    def test_blob_is_streamed(self) -> None:
        blob = bytes(range(256)) * 1024
        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{DIGEST}", reply(
            200, blob, content_type="application/octet-stream"))
        response = self.fetch("GET", f"/v2/busybox/blobs/{DIGEST}")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-length"), str(len(blob)))
        self.assertEqual(response.body, blob)

    def test_truncated_upstream_body_aborts_the_client(self) -> None:
        def truncated(request: Request) -> object:
            request.setHeader(b"content-length", b"100")
            request.write(b"only part")
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{DIGEST}", truncated)
        transport = self.send("GET", f"/v2/busybox/blobs/{DIGEST}")
        self.assertIn(b"\r\nContent-Length: 100\r\n", transport.value())
        self.assertTrue(transport.value().endswith(b"only part"))
        self.assertTrue(transport.disconnected, "the client connection must be aborted")

    def test_range_is_forwarded(self) -> None:
        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{DIGEST}", reply(
            206, b"cde", content_range="bytes 2-4/10"))
        response = self.fetch("GET", f"/v2/busybox/blobs/{DIGEST}", [("Range", "bytes=2-4")])
        self.assertEqual(response.status, 206)
        self.assertEqual(response.header("content-range"), "bytes 2-4/10")
        self.assertEqual(self.upstream.seen[0].header("range"), "bytes=2-4")

    def test_tags_list_with_paging(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/tags/list", reply(200, b'{"tags":[]}'))
        self.fetch("GET", "/v2/busybox/tags/list?n=10&last=1.36&other=x")
        self.assertEqual(self.upstream.seen[0].query, {"n": ["10"], "last": ["1.36"]})

    def test_tags_list_drops_bad_paging(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/tags/list", reply(200, b'{"tags":[]}'))
        self.fetch("GET", "/v2/busybox/tags/list?n=-1&last=../x")
        self.assertEqual(self.upstream.seen[0].query, {})

    def test_upstream_errors_are_relayed(self) -> None:
        response = self.fetch("GET", "/v2/busybox/manifests/nope")
        self.assertEqual(response.status, 404)
        self.assertEqual(response.json()["errors"][0]["code"], "NAME_UNKNOWN")

    def test_write_methods_are_refused(self) -> None:
        for method in ("PUT", "POST", "PATCH", "DELETE"):
            response = self.fetch(method, "/v2/busybox/manifests/latest")
            self.assertRegistryError(response, 405, "UNSUPPORTED")
            self.assertEqual(response.header("allow"), "GET, HEAD")
        self.assertEqual(self.upstream.seen, [])

    def test_uploads_are_refused(self) -> None:
        self.assertRegistryError(self.fetch("POST", "/v2/busybox/blobs/uploads/"), 405,
                                 "UNSUPPORTED")
        self.assertRegistryError(self.fetch("GET", "/v2/busybox/blobs/uploads/some-uuid"), 405,
                                 "UNSUPPORTED")
        self.assertEqual(self.upstream.seen, [])

    def test_catalog_is_refused(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/_catalog"), 405, "UNSUPPORTED")
        self.assertEqual(self.upstream.seen, [])

    def test_bad_digest(self) -> None:
        entry = self.assertRegistryError(self.fetch("GET", "/v2/busybox/blobs/sha256:abc"), 400,
                                         "DIGEST_INVALID")
        self.assertEqual(entry["detail"], {"digest": "sha256:abc"})
        self.assertEqual(self.upstream.seen, [])

    def test_bad_name(self) -> None:
        for path in ("/v2/BusyBox/manifests/latest", "/v2/a/../b/manifests/latest",
                     "/v2/a%2Fb/manifests/latest", "/v2//busybox/manifests/latest"):
            self.assertRegistryError(self.fetch("GET", path), 400, "NAME_INVALID")
        self.assertEqual(self.upstream.seen, [])

    def test_bad_tag(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/busybox/manifests/-x"), 400,
                                 "MANIFEST_INVALID")
        self.assertEqual(self.upstream.seen, [])

    def test_unknown_api_path(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/busybox/referrers/x"), 404, "NOT_FOUND")

    def test_unknown_page(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/favicon.ico"), 404, "NOT_FOUND")
        self.assertRegistryError(self.fetch("DELETE", "/elsewhere"), 404, "NOT_FOUND")

    def test_head_error_has_no_body(self) -> None:
        response = self.fetch("HEAD", "/v2/busybox/blobs/sha256:abc")
        self.assertEqual(response.status, 400)
        self.assertTrue(response.raw.endswith(b"\r\n\r\n"))


# --------------------------------------------------------------------------- redirects


class RedirectTests(ProxyTestCase):
    BLOB_PATH = f"/v2/library/busybox/blobs/{DIGEST}"

    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(CDN_HOST, "/blob", reply(200, b"blob bytes"))

    def get_blob(self, method: str = "GET") -> Response:
        return self.fetch(method, f"/v2/busybox/blobs/{DIGEST}",
                          [("Authorization", "Bearer tok"), ("Range", "bytes=0-")])

    def test_cross_host_redirect_is_followed(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/blob?sig=1"))
        response = self.get_blob()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"blob bytes")
        self.assertIsNone(response.header("location"))

    def test_cross_host_redirect_drops_authorization(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/blob?sig=1"))
        self.get_blob()
        hub, cdn = self.upstream.seen
        self.assertEqual(hub.header("authorization"), "Bearer tok")
        self.assertIsNone(cdn.header("authorization"))
        self.assertEqual(cdn.header("range"), "bytes=0-")
        self.assertEqual(cdn.query, {"sig": ["1"]})

    def test_redirect_keeps_the_method(self) -> None:
        for code in (301, 302, 307, 308):
            self.upstream.seen.clear()
            self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/blob", code))
            self.get_blob("HEAD")
            self.assertEqual([s.method for s in self.upstream.seen], ["HEAD", "HEAD"])

    def test_see_other_becomes_get(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", redirect(f"https://{CDN_HOST}/blob", 303))
        self.upstream.on(CDN_HOST, "/blob", reply(200, b"{}"))
        self.fetch("GET", "/v2/")
        self.assertEqual([s.method for s in self.upstream.seen], ["GET", "GET"])

    def test_relative_location_is_resolved_against_the_upstream(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect("/storage/blob?sig=2"))
        self.upstream.on(HUB_HOST, "/storage/blob", reply(200, b"stored"))
        response = self.get_blob()
        self.assertEqual(response.body, b"stored")
        second = self.upstream.seen[1]
        self.assertEqual((second.host, second.path, second.query),
                         (HUB_HOST, "/storage/blob", {"sig": ["2"]}))

    def test_same_origin_redirect_keeps_authorization(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{HUB_HOST}:443/storage"))
        self.upstream.on(HUB_HOST, "/storage", reply(200, b"stored"))
        self.get_blob()
        self.assertEqual([s.header("authorization") for s in self.upstream.seen],
                         ["Bearer tok", "Bearer tok"])

    def test_authorization_stays_dropped_after_leaving_the_origin(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/hop"))
        self.upstream.on(CDN_HOST, "/hop", redirect(f"https://{HUB_HOST}/storage"))
        self.upstream.on(HUB_HOST, "/storage", reply(200, b"stored"))
        self.assertEqual(self.get_blob().body, b"stored")
        self.assertEqual([s.header("authorization") for s in self.upstream.seen],
                         ["Bearer tok", None, None])

    def test_five_redirects_are_followed(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(f"https://{CDN_HOST}/r1"))
        for hop in range(1, 5):
            self.upstream.on(CDN_HOST, f"/r{hop}", redirect(f"/r{hop + 1}"))
        self.upstream.on(CDN_HOST, "/r5", reply(200, b"far"))
        self.assertEqual(self.get_blob().body, b"far")

    def test_more_than_five_redirects_is_a_bad_gateway(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect(self.BLOB_PATH))
        entry = self.assertRegistryError(self.get_blob(), 502, "UNAVAILABLE")
        self.assertIn("redirects", entry["message"])
        self.assertEqual(len(self.upstream.seen), 6)

    def test_redirect_to_another_scheme_is_a_bad_gateway(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, redirect("ftp://cdn.test/blob"))
        self.assertRegistryError(self.get_blob(), 502, "UNAVAILABLE")
        self.assertEqual(len(self.upstream.seen), 1)

    def test_redirect_without_location_is_relayed(self) -> None:
        self.upstream.on(HUB_HOST, self.BLOB_PATH, reply(302, b"nowhere"))
        response = self.get_blob()
        self.assertEqual(response.status, 302)
        self.assertEqual(response.body, b"nowhere")


# --------------------------------------------------------------------------- upstream failures


class UpstreamFailureTests(ProxyTestCase):
    def test_connection_refused_is_a_bad_gateway(self) -> None:
        self.use(build_config({}, {}),
                 http=ScriptedHTTP(lambda: defer.fail(ConnectionRefusedError("127.0.0.1"))))
        entry = self.assertRegistryError(self.fetch("GET", "/v2/busybox/manifests/latest"), 502,
                                         "UNAVAILABLE")
        self.assertIn(DOCKER_HUB_URL, entry["message"])
        self.assertIn("connection refused", entry["message"])
        self.assertEqual(entry["detail"], {"upstream": DOCKER_HUB_URL})

    def test_dns_failure_is_a_bad_gateway(self) -> None:
        self.use(build_config({}, {}), http=ScriptedHTTP(lambda: defer.fail(DNSLookupError())))
        entry = self.assertRegistryError(self.fetch("GET", "/v2/"), 502, "UNAVAILABLE")
        self.assertIn("host name lookup failed", entry["message"])

    def test_unexpected_client_failure_is_a_bad_gateway(self) -> None:
        self.use(build_config({}, {}),
                 http=ScriptedHTTP(lambda: defer.fail(RuntimeError("boom\nsecond line"))))
        entry = self.assertRegistryError(self.fetch("GET", "/v2/"), 502, "UNAVAILABLE")
        self.assertNotIn("second line", entry["message"])

    def test_requests_are_unbuffered_without_redirects(self) -> None:
        http = ScriptedHTTP()
        self.use(build_config({}, {}), http=http)
        self.send("GET", "/v2/busybox/manifests/latest")
        [call] = http.calls
        self.assertEqual((call.method, call.url),
                         ("GET", f"{DOCKER_HUB_URL}/v2/library/busybox/manifests/latest"))
        self.assertEqual(call.kwargs, {"allow_redirects": False, "unbuffered": True})

    def test_headers_timeout_is_a_gateway_timeout(self) -> None:
        http = ScriptedHTTP()
        self.use(build_config({"timeouts": {"headers": 30}}, {}), http=http)
        transport = self.send("GET", "/v2/busybox/manifests/latest")
        self.clock.advance(29.9)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.2)
        response = parse_response(transport.value(), "GET")
        entry = self.assertRegistryError(response, 504, "UNAVAILABLE")
        self.assertIn(DOCKER_HUB_URL, entry["message"])
        self.assertIn("30", entry["message"])
        self.assertEqual(http.cancelled, [http.calls[0].result])

    def test_client_going_away_cancels_the_upstream_request(self) -> None:
        http = ScriptedHTTP()
        self.use(build_config({}, {}), http=http)
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /v2/ HTTP/1.1\r\nHost: m\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionDone("gone")))
        self.assertEqual(http.cancelled, [http.calls[0].result])
        self.assertEqual(transport.value(), b"")


# --------------------------------------------------------------------------- routing by Host


class HostRoutingTests(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.use(build_config({"presets": False, "routes": {
            "hub.mirror.test": DOCKER_HUB_URL,
            "ghcr.mirror.test": "https://ghcr.io",
        }}, {}))

    def test_route_by_host(self) -> None:
        self.fetch("GET", "/v2/owner/image/manifests/1", host="ghcr.mirror.test:5000")
        self.fetch("GET", "/v2/busybox/manifests/1", host="ghcr.mirror.test")
        self.fetch("GET", "/v2/busybox/manifests/1", host="hub.mirror.test")
        self.assertEqual([(s.host, s.path) for s in self.upstream.seen], [
            ("ghcr.io", "/v2/owner/image/manifests/1"),
            ("ghcr.io", "/v2/busybox/manifests/1"),
            (HUB_HOST, "/v2/library/busybox/manifests/1"),
        ])

    def test_unknown_host_is_a_json_404_listing_routes(self) -> None:
        response = self.fetch("GET", "/v2/busybox/manifests/latest", host="other.test")
        entry = self.assertRegistryError(response, 404, "NAME_UNKNOWN")
        self.assertEqual(entry["detail"]["routes"], {
            "ghcr.mirror.test": "https://ghcr.io", "hub.mirror.test": DOCKER_HUB_URL})
        self.assertEqual(self.upstream.seen, [])

    def test_unknown_host_ping_and_token(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/", host="other.test"), 404,
                                 "NAME_UNKNOWN")
        self.assertRegistryError(self.fetch("GET", "/v2/auth", host="other.test"), 404,
                                 "NAME_UNKNOWN")
        self.assertEqual(self.upstream.seen, [])

    def test_missing_host_header(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/", host=None), 404, "NAME_UNKNOWN")

    def test_unknown_host_ping_is_answered_locally_when_registries_exist(self) -> None:
        """Path-prefix pulls work on any Host: the proxy challenges on its own."""
        self.use(build_config({"routes": {"hub.mirror.test": DOCKER_HUB_URL}}, {}))
        response = self.fetch("GET", "/v2/", host="other.test")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header("www-authenticate"),
                         'Bearer realm="http://other.test/v2/auth",service="dockerproxy"')
        self.assertEqual(self.upstream.seen, [])


# --------------------------------------------------------------------------- usage page


class UsagePageTests(ProxyTestCase):
    def test_usage_page(self) -> None:
        response = self.fetch("GET", "/", host="mirror.example.org:5000")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")
        self.assertIn(b"mirror.example.org:5000", response.body)
        self.assertEqual(self.upstream.seen, [])

    def test_usage_page_head(self) -> None:
        response = self.fetch("HEAD", "/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")

    def test_post_to_usage_page_is_a_json_error(self) -> None:
        self.assertRegistryError(self.fetch("POST", "/"), 405, "UNSUPPORTED")


# --------------------------------------------------------------------------- access log


class AccessLogTests(ProxyTestCase):
    def test_one_event_per_request(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/manifests/latest", reply(200, MANIFEST))
        self.fetch("GET", "/v2/busybox/manifests/latest?x=1")
        [event] = self.access
        self.assertEqual(event["method"], "GET")
        self.assertEqual(event["path"], "/v2/busybox/manifests/latest?x=1")
        self.assertEqual(event["status"], 200)
        self.assertEqual(event["bytes"], len(MANIFEST))
        self.assertEqual(event["duration"], 0.0)
        self.assertEqual(event["upstream"], DOCKER_HUB_URL)
        self.assertTrue(event["complete"])

    def test_error_without_upstream(self) -> None:
        self.fetch("GET", "/v2/Bad/manifests/latest")
        [event] = self.access
        self.assertEqual(event["status"], 400)
        self.assertEqual(event["upstream"], "-")
        self.assertGreater(event["bytes"], 0)

    def test_duration_is_measured_on_the_clock(self) -> None:
        self.use(build_config({"timeouts": {"headers": 30}}, {}), http=ScriptedHTTP())
        self.send("GET", "/v2/busybox/manifests/latest")
        self.assertEqual(self.access, [])
        self.clock.advance(31)
        [event] = self.access
        self.assertEqual(event["status"], 504)
        self.assertEqual(event["duration"], 31.0)
        self.assertEqual(event["upstream"], DOCKER_HUB_URL)

    def test_failed_ping_names_the_upstream(self) -> None:
        self.use(build_config({}, {}),
                 http=ScriptedHTTP(lambda: defer.fail(ConnectionRefusedError())))
        self.fetch("GET", "/v2/")
        [event] = self.access
        self.assertEqual(event["status"], 502)
        self.assertEqual(event["upstream"], DOCKER_HUB_URL)

    def test_aborted_request_is_logged_once(self) -> None:
        self.use(build_config({}, {}), http=ScriptedHTTP())
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /v2/ HTTP/1.1\r\nHost: m\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionDone("gone")))
        [event] = self.access
        self.assertFalse(event["complete"])
        self.assertEqual(event["path"], "/v2/")

    def test_each_request_logs(self) -> None:
        self.fetch("GET", "/v2/")
        self.fetch("HEAD", "/v2/")
        self.fetch("PUT", "/v2/x/manifests/y")
        self.assertEqual([(e["method"], e["status"]) for e in self.access],
                         [("GET", 401), ("HEAD", 401), ("PUT", 405)])


class HeapTrimTests(ProxyTestCase):
    """Each response's end, complete or cut short, asks for the heap to be trimmed;
    one cut short, for a garbage collection first."""

    def setUp(self) -> None:
        super().setUp()
        self.calls: list[str] = []
        self.use(build_config({}, {}), http=ScriptedHTTP())
        heap = HeapTrimmer(self.clock, lambda: self.calls.append("trim"),
                           collect=lambda: self.calls.append("collect"))
        self.site = make_site(self.proxy, self.clock, heap)

    def test_a_finished_response_is_followed_by_a_trim(self) -> None:
        self.fetch("GET", "/")
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(self.calls, ["trim"])

    def test_an_aborted_request_is_followed_by_a_collection_and_a_trim(self) -> None:
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"GET /v2/ HTTP/1.1\r\nHost: m\r\n\r\n")
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(self.calls, [], "the response has not ended yet")
        protocol.connectionLost(Failure(ConnectionDone("gone")))
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(self.calls, ["collect", "trim"])


# --------------------------------------------------------------------------- every error is JSON


class JSONErrorTests(ProxyTestCase):
    def test_proxy_errors_are_registry_json(self) -> None:
        self.use(build_config({"routes": {"ghcr.mirror.test": "https://ghcr.io"}}, {}))
        cases = [
            ("GET", "/nope", MIRROR),
            ("GET", "/v2/Bad/manifests/x", "ghcr.mirror.test"),
            ("GET", "/v2/a/blobs/sha256:0", "ghcr.mirror.test"),
            ("GET", "/v2/a/manifests/x", "unrouted.test"),
            ("DELETE", "/v2/a/manifests/x", "ghcr.mirror.test"),
            ("POST", "/v2/", "ghcr.mirror.test"),
            ("PATCH", "/v2/auth", "ghcr.mirror.test"),
            ("OPTIONS", "/", "ghcr.mirror.test"),
            ("GET", "/v2/_catalog", "ghcr.mirror.test"),
        ]
        for method, path, host in cases:
            response = self.fetch(method, path, host=host)
            self.assertGreaterEqual(response.status, 400, (method, path))
            self.assertEqual(response.header("content-type"), "application/json; charset=utf-8",
                             (method, path))
            self.assertNotIn(b"Traceback", response.raw)
            [entry] = response.json()["errors"]
            self.assertEqual(set(entry) - {"detail"}, {"code", "message"}, (method, path))


# --------------------------------------------------------------------------- proxy credentials


class ProxyCredentialsTests(ProxyTestCase):
    """The proxy's own upstream account: used only for clients that send no credentials."""

    PATH = "/v2/library/busybox/manifests/1"
    BOT = "Basic Ym90OnB3"  # bot:pw

    def setUp(self) -> None:
        super().setUp()
        self.use(build_config({"registries": {"docker.io": {
            "url": DOCKER_HUB_URL, "username": "bot", "password": "pw"}}}, {}))

    def basic_upstream(self) -> None:
        def handle(request: Request) -> bytes:
            if request.getHeader(b"authorization") == self.BOT.encode():
                return MANIFEST
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Basic realm="registry"')
            return UNAUTHORIZED

        self.upstream.on(HUB_HOST, self.PATH, handle)

    def test_token_requests_carry_the_proxy_account_for_anonymous_clients(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        [seen] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual(seen.header("authorization"), self.BOT)

    def test_a_clients_own_credentials_win(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:busybox:pull",
                   [("Authorization", "Basic dXNlcjpzZWNyZXQ=")])
        [seen] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual(seen.header("authorization"), "Basic dXNlcjpzZWNyZXQ=")

    def test_basic_upstreams_get_the_account_for_anonymous_clients(self) -> None:
        self.basic_upstream()
        response = self.fetch("GET", "/v2/busybox/manifests/1")
        self.assertEqual((response.status, response.body), (200, MANIFEST))
        self.assertEqual([s.header("authorization") for s in self.upstream.seen
                          if s.path == self.PATH], [None, self.BOT])

    def test_basic_upstreams_never_get_the_account_for_clients_with_credentials(self) -> None:
        self.basic_upstream()
        response = self.fetch("GET", "/v2/busybox/manifests/1",
                              [("Authorization", "Basic dXNlcjpzZWNyZXQ=")])
        self.assertEqual(response.status, 401)
        self.assertNotIn(self.BOT, [s.header("authorization") for s in self.upstream.seen])

    def test_credentials_are_never_in_reprs(self) -> None:
        self.assertNotIn("pw", repr(self.proxy.router.registries["docker.io"]))


class TagListLinkTests(ProxyTestCase):
    def test_paging_links_name_the_repository_as_the_client_does(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/tags/list", reply(
            200, b'{"name":"library/busybox","tags":["1"]}', content_type="application/json",
            link='</v2/library/busybox/tags/list?last=1&n=1>; rel="next"'))
        response = self.fetch("GET", "/v2/busybox/tags/list?n=1")
        self.assertEqual(response.header("link"),
                         '</v2/busybox/tags/list?last=1&n=1>; rel="next"')
