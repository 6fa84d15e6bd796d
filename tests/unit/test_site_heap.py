"""The Site asks for the heap to be trimmed once each response has ended."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from dockerproxy.config import build_config
from dockerproxy.heap import TRIM_DELAY, HeapTrimmer
from dockerproxy.wiring import make_site
from tests.unit.proxysite import ProxyTestCase, ScriptedHTTP


class HeapTrimTests(ProxyTestCase):
    """Each response's end, complete or cut short, asks for the heap to be trimmed;
    one cut short, for a garbage collection first."""

    def setUp(self) -> None:
        super().setUp()
        self.calls: list[str] = []
        self.use(build_config({}, {}), http=ScriptedHTTP())
        heap = HeapTrimmer(
            self.clock,
            lambda: self.calls.append("trim"),
            collect=lambda: self.calls.append("collect"),
        )
        self.site = make_site(self.proxy, self.clock, heap=heap)

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
