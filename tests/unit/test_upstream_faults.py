"""Upstream faults the client must see as registry JSON: stalls after the headers, HTML error
pages, 429s, and token realms that redirect, in relay mode and in cache mode; connections
refused or unresolvable, response headers that never come, and a client leaving cancels the
upstream request."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from dockerproxy.config import DOCKER_HUB_URL, CacheConfig, Config, build_config
from tests.unit.fakes import FakeResponse, lost, scratch_dir
from tests.unit.proxysite import (
    AUTH_HOST,
    HUB_CHALLENGE,
    HUB_HOST,
    MANIFEST,
    ProxyTestCase,
    ScriptedHTTP,
    make_parts,
    parse_response,
    redirect,
    reply,
)

INDEX = "application/vnd.oci.image.index.v1+json"
TAG = "/v2/library/busybox/manifests/latest"
HTML_500 = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
IDLE = 20.0


class StoppableBody(StringTransport):
    """A body transport that, as Twisted's does, ends the body when told to stop."""

    def __init__(self) -> None:
        super().__init__()
        self.receiver: Any = None

    def stopProducing(self) -> None:
        super().stopProducing()
        if self.receiver is not None:
            receiver, self.receiver = self.receiver, None
            receiver.connectionLost(lost())


class StalledResponse(FakeResponse):
    def deliverBody(self, protocol: Any) -> None:
        self.transport.receiver = protocol
        super().deliverBody(protocol)


class Stalling:
    """The fake upstream, except that answers to C{stalled} URLs send their headers and then
    nothing at all."""

    def __init__(self, stub: Any) -> None:
        self.stub = stub
        self.stalled: dict[str, FakeResponse] = {}
        self.bodies: list[StringTransport] = []

    def stall(self, url: str, code: int = 200, **headers: str) -> None:
        body = StoppableBody()
        self.bodies.append(body)
        response = StalledResponse(1000, body, code)
        for name, value in headers.items():
            response.headers.setRawHeaders(name.replace("_", "-").encode(), [value.encode()])
        self.stalled[url] = response

    def request(
        self, method: str, url: str, headers: Headers | None = None, **kwargs: Any
    ) -> defer.Deferred[Any]:
        if url.split("?")[0] in self.stalled:
            return defer.succeed(self.stalled[url.split("?")[0]])
        return self.stub.request(method, url, headers=headers, **kwargs)


class RelayFaults(ProxyTestCase):
    """Relay mode: the upstream's answers as the client sees them."""

    cache = False

    def use(self, config: Config, http: Any = None) -> None:
        config = replace(config, timeouts=replace(config.timeouts, idle=IDLE))
        cache = CacheConfig(directory=str(scratch_dir(self)) if self.cache else None)
        self.http = Stalling(http or self.stub)
        self.proxy, self.mirror, self.site = make_parts(
            replace(config, cache=cache), self.clock, self.http
        )

    def test_an_html_error_page_becomes_a_registry_error_with_its_status(self) -> None:
        self.upstream.on(HUB_HOST, TAG, reply(500, HTML_500, content_type="text/html"))
        response = self.fetch("GET", "/v2/busybox/manifests/latest", [("Accept", INDEX)])
        entry = self.assertRegistryError(response, 500, "UNAVAILABLE")
        self.assertIn("https://registry-1.docker.io", entry["message"])
        self.assertEqual(entry["detail"]["status"], 500)
        self.assertNotIn(b"<html>", response.raw)

    def test_a_registry_error_body_is_kept(self) -> None:
        body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such tag"}]}'
        self.upstream.on(HUB_HOST, TAG, reply(404, body))  # no JSON content type: still kept
        response = self.fetch("GET", "/v2/busybox/manifests/latest", [("Accept", INDEX)])
        self.assertEqual((response.status, response.body), (404, body))
        self.assertEqual(response.header("content-type"), "application/json; charset=utf-8")

    def test_a_429_keeps_retry_after_and_gets_its_reason_phrase(self) -> None:
        self.upstream.on(
            HUB_HOST, TAG, reply(429, b"slow down", retry_after="120", content_type="text/plain")
        )
        response = self.fetch("GET", "/v2/busybox/manifests/latest", [("Accept", INDEX)])
        self.assertRegistryError(response, 429, "TOOMANYREQUESTS")
        self.assertEqual(response.header("retry-after"), "120")
        self.assertTrue(
            response.raw.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), response.raw[:40]
        )

    def test_an_error_body_that_stalls_is_a_gateway_timeout(self) -> None:
        self.http.stall(f"https://{HUB_HOST}{TAG}", 500, content_type="text/html")
        transport = self.send("GET", "/v2/busybox/manifests/latest", [("Accept", INDEX)])
        self.clock.advance(IDLE - 1)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(2)
        response = parse_response(transport.value(), "GET")
        self.assertRegistryError(response, 504, "UNAVAILABLE")
        self.assertEqual(self.http.bodies[0].producerState, "stopped")

    def test_a_token_body_that_stalls_is_a_gateway_timeout(self) -> None:
        self.http.stall(f"https://{AUTH_HOST}/token", content_type="application/json")
        # With credentials: an anonymous client in cache mode gets the proxy's own token.
        transport = self.send(
            "GET", "/v2/auth?scope=repository:busybox:pull", [("Authorization", "Basic dTpw")]
        )
        self.assertEqual(transport.value(), b"")
        self.clock.advance(IDLE + 1)
        entry = self.assertRegistryError(
            parse_response(transport.value(), "GET"), 504, "UNAVAILABLE"
        )
        self.assertIn(AUTH_HOST, entry["message"])

    def test_a_token_realm_that_redirects_is_followed_by_the_proxy(self) -> None:
        self.upstream.on(AUTH_HOST, "/token", redirect(f"https://{AUTH_HOST}/token2?x=1"))
        self.upstream.on(AUTH_HOST, "/token2", self.upstream.token)
        response = self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        self.assertEqual(response.status, 200, response.raw)
        self.assertEqual(response.json()["token"], "tok")
        [first, second] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual((first.path, second.path), ("/token", "/token2"))

    def test_an_html_token_error_becomes_a_registry_error(self) -> None:
        self.upstream.on(AUTH_HOST, "/token", reply(503, HTML_500, content_type="text/html"))
        response = self.fetch(
            "GET", "/v2/auth?scope=repository:busybox:pull", [("Authorization", "Basic dTpw")]
        )
        self.assertRegistryError(response, 503, "UNAVAILABLE")

    def test_a_json_token_error_is_relayed(self) -> None:
        body = b'{"details":"incorrect username or password"}'
        self.upstream.on(AUTH_HOST, "/token", reply(401, body, content_type="application/json"))
        response = self.fetch(
            "GET", "/v2/auth?scope=repository:busybox:pull", [("Authorization", "Basic dTpw")]
        )
        self.assertEqual((response.status, response.body), (401, body))


class CacheFaults(RelayFaults):
    """Cache mode: the same answers, and a manifest body that stalls no longer hangs."""

    cache = True

    def test_a_manifest_body_that_stalls_is_a_gateway_timeout(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", reply(401, b"{}", www_authenticate=HUB_CHALLENGE))
        self.http.stall(f"https://{HUB_HOST}{TAG}", content_type=INDEX)
        transport = self.send("GET", "/v2/busybox/manifests/latest", [("Accept", INDEX)])
        self.clock.advance(IDLE - 1)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(2)
        entry = self.assertRegistryError(
            parse_response(transport.value(), "GET"), 504, "UNAVAILABLE"
        )
        self.assertIn(f"{IDLE:g} seconds", entry["message"])
        self.assertEqual(self.http.bodies[0].producerState, "stopped")
        # Nothing was cached: the next pull asks again and gets the real manifest.
        del self.http.stalled[f"https://{HUB_HOST}{TAG}"]
        self.upstream.on(HUB_HOST, TAG, reply(200, MANIFEST, content_type=INDEX))
        response = self.fetch("GET", "/v2/busybox/manifests/latest", [("Accept", INDEX)])
        self.assertEqual((response.status, response.body), (200, MANIFEST))


def test_relay_faults_use_a_short_idle_timeout() -> None:
    assert build_config({"timeouts": {"idle": IDLE}}, {}).timeouts.idle == IDLE


# --------------------------------------------------------------------------- no connection


class UpstreamFailureTests(ProxyTestCase):
    def test_connection_refused_is_a_bad_gateway(self) -> None:
        self.use(
            build_config({}, {}),
            http=ScriptedHTTP(lambda: defer.fail(ConnectionRefusedError("127.0.0.1"))),
        )
        entry = self.assertRegistryError(
            self.fetch("GET", "/v2/busybox/manifests/latest"), 502, "UNAVAILABLE"
        )
        self.assertIn(DOCKER_HUB_URL, entry["message"])
        self.assertIn("connection refused", entry["message"])
        self.assertEqual(entry["detail"], {"upstream": DOCKER_HUB_URL})

    def test_dns_failure_is_a_bad_gateway(self) -> None:
        self.use(build_config({}, {}), http=ScriptedHTTP(lambda: defer.fail(DNSLookupError())))
        entry = self.assertRegistryError(self.fetch("GET", "/v2/"), 502, "UNAVAILABLE")
        self.assertIn("host name lookup failed", entry["message"])

    def test_unexpected_client_failure_is_a_bad_gateway(self) -> None:
        self.use(
            build_config({}, {}),
            http=ScriptedHTTP(lambda: defer.fail(RuntimeError("boom\nsecond line"))),
        )
        entry = self.assertRegistryError(self.fetch("GET", "/v2/"), 502, "UNAVAILABLE")
        self.assertNotIn("second line", entry["message"])

    def test_requests_are_unbuffered_without_redirects(self) -> None:
        http = ScriptedHTTP()
        self.use(build_config({}, {}), http=http)
        self.send("GET", "/v2/busybox/manifests/latest")
        [call] = http.calls
        self.assertEqual(
            (call.method, call.url),
            ("GET", f"{DOCKER_HUB_URL}/v2/library/busybox/manifests/latest"),
        )
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
