"""The access log (L{dockerproxy.accesslog}, L{dockerproxy.site.ProxyRequest}): one event
per request, with the peer address, the upstream and the duration on the clock."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from dockerproxy.config import DOCKER_HUB_URL, build_config
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
