"""The access log (L{dockerproxy.accesslog}, L{dockerproxy.site.ProxyRequest}): one event
per request, with the peer address, the upstream and the duration on the clock."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from dockerproxy.accesslog import ROUTES, route_of
from dockerproxy.config import DOCKER_HUB_URL, build_config
from dockerproxy.site import ProxySite
from tests.unit.proxysite import HUB_HOST, MANIFEST, ProxyTestCase, ScriptedHTTP, reply


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

    def test_the_client_is_the_peer_address_not_the_host_header(self) -> None:
        self.fetch("GET", "/v2/", host="203.0.113.9")
        [event] = self.access
        self.assertEqual(event["client"], StringTransport().getPeer().host)

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
        self.use(
            build_config({}, {}), http=ScriptedHTTP(lambda: defer.fail(ConnectionRefusedError()))
        )
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
        self.assertEqual(
            [(e["method"], e["status"]) for e in self.access],
            [("GET", 401), ("HEAD", 401), ("PUT", 405)],
        )


class AccessLogFieldTests(ProxyTestCase):
    """What an operator needs on each line: the request id (also in the response), the
    user, the upstream's status, the mirror's answer, containerd's ns, the route."""

    def test_the_request_id_is_generated_and_echoed(self) -> None:
        first = self.fetch("GET", "/v2/")
        second = self.fetch("GET", "/v2/")
        ids = [event["request_id"] for event in self.access]
        self.assertEqual([first.header("x-request-id"), second.header("x-request-id")], ids)
        self.assertNotEqual(ids[0], ids[1])
        self.assertRegex(ids[0], "^[0-9a-f]{16}$")

    def test_the_id_of_a_trusted_proxy_is_kept(self) -> None:
        peer = StringTransport().getPeer().host
        self.site.access = build_config({"access": {"trusted_proxies": [peer]}}, {}).access
        response = self.fetch(
            "GET", "/v2/", [("X-Request-Id", "lb-42"), ("X-Forwarded-For", "198.51.100.7")]
        )
        [event] = self.access
        self.assertEqual(event["request_id"], "lb-42")
        self.assertEqual(response.header("x-request-id"), "lb-42")
        self.assertEqual(event["client"], "198.51.100.7")

    def test_a_request_refused_at_the_edge_has_an_id_too(self) -> None:
        response = self.fetch("GET", "/v2/", [("Range", "bytes=0-1"), ("Range", "bytes=2-3")])
        self.assertEqual(response.status, 400)
        [event] = self.access
        self.assertEqual(response.header("x-request-id"), event["request_id"])
        self.assertNotEqual(event["request_id"], "-")

    def test_upstream_status_image_route_and_ns(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/manifests/latest", reply(200, MANIFEST))
        self.fetch("GET", "/v2/busybox/manifests/latest?ns=docker.io")
        [event] = self.access
        self.assertEqual(event["upstream_status"], 200)
        self.assertEqual(event["image"], "docker.io/library/busybox")
        self.assertEqual(event["route"], "tag")
        self.assertEqual(event["ns"], "docker.io")
        self.assertEqual(event["user"], "-")
        self.assertIsNone(event["refusal"])

    def test_the_user_and_the_refusal_the_request_carries(self) -> None:
        """Auth sets C{request.user}, policy C{request.refusal}: both are logged."""

        class Refusing(Resource):
            isLeaf = True

            def render_GET(self, request: Request) -> bytes:
                request.user, request.refusal = "ci", "rate"  # type: ignore[attr-defined]
                request.setResponseCode(429)
                return b"{}"

        self.site = ProxySite(Refusing(), self.clock)
        self.fetch("GET", "/v2/x/manifests/y")
        [event] = self.access
        self.assertEqual((event["user"], event["refusal"], event["status"]), ("ci", "rate", 429))

    def test_the_text_line_has_every_field(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/library/busybox/manifests/latest", reply(200, MANIFEST))
        self.fetch("GET", "/v2/busybox/manifests/latest")
        [event] = self.access
        line = formatEvent(event)
        self.assertIn(f" - GET /v2/busybox/manifests/latest 200 {len(MANIFEST)} 0.000s ", line)
        self.assertIn(f"{DOCKER_HUB_URL} 200 cache=- ns=- id={event['request_id']}", line)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        (b"/", "home"),
        (b"/?lang=zh", "home"),
        (b"/v2/", "ping"),
        (b"/v2/auth?scope=x", "auth"),
        (b"/v2/library/alpine/manifests/3.20", "tag"),
        (b"/v2/ghcr.io/o/i/manifests/sha256:" + b"a" * 64, "manifest"),
        (b"/v2/library/alpine/blobs/sha256:" + b"a" * 64, "blob"),
        (b"/v2/library/alpine/tags/list?n=10", "tag_list"),
        (b"/v2/library/alpine/referrers/sha256:" + b"a" * 64, "referrers"),
        (b"/v2/library/alpine/referrers/sha256:" + b"a" * 64 + b"?artifactType=a/b", "referrers"),
        (b"/v1/search?q=alpine&n=25", "search"),
        (b"/v1/_ping", "other"),
        (b"/v2/manifests/blobs/", "other"),
        (b"/wp-login.php", "other"),
        (b"/v2/x/uploads/", "other"),
    ],
)
def test_route_of(path: bytes, route: str) -> None:
    assert route_of(path) == route
    assert route in ROUTES
