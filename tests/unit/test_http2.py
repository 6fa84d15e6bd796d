"""HTTP/2 through the whole Site: the h2 package as the client, frames over a StringTransport
on which TLS negotiated h2, a scripted upstream whose body the test feeds."""

from __future__ import annotations

import h2.errors
from twisted.internet.testing import StringTransport
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource

from dockerproxy.admin.pages import AdminSite
from dockerproxy.channel import MAX_BODY, MAX_LINE
from dockerproxy.config import build_config
from dockerproxy.http2 import MAX_STREAMS, STREAM_QUEUE, ProxyH2Connection
from dockerproxy.listeners import ConnectionLimit
from tests.unit.fakes import FakeResponse
from tests.unit.h2wire import ALPNTransport, H2Wire
from tests.unit.proxysite import ProxyTestCase, ScriptedHTTP, parse_response

BLOB = b"/v2/lib/a/blobs/sha256:" + b"ab" * 32
KiB = 1024


class H2TestCase(ProxyTestCase):
    """A proxy whose upstream (registry.test, no auth) answers as the test says."""

    def setUp(self) -> None:
        super().setUp()
        self.http = ScriptedHTTP()
        self.use(
            build_config({"upstream": "https://registry.test", "presets": False}, {}), self.http
        )
        self.site.http2 = True
        self.opened: list[str] = []
        self.site.connections = ConnectionLimit(
            10, lambda: self.opened.append("pause"), lambda: None, self.clock
        )

    def connect(self) -> H2Wire:
        return H2Wire(self.site, self.clock)

    def upstream_answers(self, length: int | object) -> tuple[FakeResponse, StringTransport]:
        """The last upstream request gets a 200 whose body the test sends."""
        socket = StringTransport()
        response = FakeResponse(length, socket)
        if length is not UNKNOWN_LENGTH:
            response.headers.setRawHeaders(b"content-length", [b"%d" % length])  # type: ignore[str-format]
        self.http.calls[-1].result.callback(response)
        return response, socket

    def h2_connection(self, wire: H2Wire) -> ProxyH2Connection:
        channel = wire.protocol.channel  # type: ignore[attr-defined]
        assert isinstance(channel, ProxyH2Connection)
        return channel


class RelayTests(H2TestCase):
    def test_a_blob_is_relayed_over_h2_and_logged_as_http2(self) -> None:
        wire = self.connect()
        stream = wire.request(b"GET", BLOB)
        self.assertEqual(len(self.http.calls), 1)
        self.assertEqual(self.http.calls[0].url, "https://registry.test" + BLOB.decode())
        response, _ = self.upstream_answers(10)
        assert response.protocol is not None
        response.protocol.dataReceived(b"0123456789")
        response.protocol.connectionLost(_done())
        wire.pump()
        seen = wire.streams[stream]
        self.assertEqual((seen.status, seen.body, seen.ended), (200, b"0123456789", True))
        self.assertEqual(seen.header("content-length"), "10")
        [event] = self.access
        self.assertEqual(
            (event["status"], event["protocol"], event["complete"]), (200, "HTTP/2", True)
        )

    def test_the_authority_is_the_host_the_edge_reads(self) -> None:
        wire = self.connect()
        home = wire.request(b"GET", b"/")
        self.assertEqual(wire.streams[home].status, 200)  # the home page, for mirror.test
        self.assertIn(b"mirror.test", wire.streams[home].body)
        same = wire.request(b"GET", b"/", [(b"host", b"mirror.test")])
        self.assertEqual(wire.streams[same].status, 200)  # one Host, not a duplicate
        other = H2Wire(self.site, self.clock, validate=False)
        other.request(b"GET", b"/", [(b"host", b"other.test")])
        assert other.goaway is not None
        self.assertTrue(other.transport.disconnecting)

    def test_an_exhausted_window_pauses_the_upstream_until_the_client_reads(self) -> None:
        wire = self.connect()
        stream = wire.request(b"GET", BLOB)
        response, socket = self.upstream_answers(1024 * KiB)
        assert response.protocol is not None
        for _ in range(4):  # 64 KiB: the client's whole initial window (65535)
            response.protocol.dataReceived(b"x" * 16 * KiB)
        wire.pump()
        self.assertEqual(socket.producerState, "paused")
        self.assertEqual(len(wire.streams[stream].body), 65535)
        wire.take(stream)
        self.assertEqual(socket.producerState, "producing")

    def test_a_client_with_a_huge_window_that_reads_nothing_holds_a_bounded_queue(self) -> None:
        wire = self.connect()
        wire.client.increment_flow_control_window(2**30)
        stream = wire.request(b"GET", BLOB)
        wire.client.increment_flow_control_window(2**30, stream)
        wire.pump()
        connection = self.h2_connection(wire)
        connection.pauseProducing()  # the TLS transport is full: nothing more goes out
        response, socket = self.upstream_answers(4096 * KiB)
        assert response.protocol is not None
        fed = 0
        while socket.producerState == "producing" and fed < 4096 * KiB:
            response.protocol.dataReceived(b"x" * 64 * KiB)
            fed += 64 * KiB
            wire.pump()
        self.assertEqual(socket.producerState, "paused")
        self.assertLessEqual(fed - len(wire.streams[stream].body), STREAM_QUEUE)
        connection.resumeProducing()  # the TLS transport sent what it had
        wire.pump()
        self.assertEqual(len(wire.streams[stream].body), fed)
        self.assertEqual(socket.producerState, "producing")

    def test_a_stream_reset_mid_body_stops_the_upstream_body(self) -> None:
        wire = self.connect()
        stream = wire.request(b"GET", BLOB)
        response, socket = self.upstream_answers(1024 * KiB)
        assert response.protocol is not None
        response.protocol.dataReceived(b"x" * 16 * KiB)
        wire.pump()
        wire.reset(stream)
        self.assertEqual(socket.producerState, "stopped")
        self.assertFalse(wire.transport.disconnecting)  # the other streams go on
        self.assertEqual(self.access[-1]["complete"], False)
        other = wire.request(b"GET", b"/")
        self.assertEqual(wire.streams[other].status, 200)

    def test_a_stream_reset_before_the_upstream_answers_cancels_its_request(self) -> None:
        wire = self.connect()
        stream = wire.request(b"GET", BLOB)
        self.assertEqual(self.http.cancelled, [])
        wire.reset(stream)
        self.assertEqual(self.http.cancelled, [self.http.calls[0].result])

    def test_an_upstream_body_cut_short_resets_the_stream(self) -> None:
        wire = self.connect()
        stream = wire.request(b"GET", BLOB)
        response, _ = self.upstream_answers(100)
        assert response.protocol is not None
        response.protocol.dataReceived(b"x" * 10)
        response.protocol.connectionLost(_lost())
        wire.pump()
        seen = wire.streams[stream]
        self.assertIsNotNone(seen.reset)
        self.assertFalse(seen.ended)

    def test_http1_is_still_spoken_when_alpn_chose_it(self) -> None:
        transport = ALPNTransport(b"http/1.1")
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: mirror.test\r\n\r\n")
        self.assertEqual(parse_response(transport.value(), "GET").status, 200)
        self.assertEqual(self.access[-1]["protocol"], "HTTP/1.1")


class ALPNTests(H2TestCase):
    def test_h2_is_offered_only_with_http2_on(self) -> None:
        """Twisted's TLS asks the factory what to offer, and Twisted's Site offers h2
        whenever the h2 package is installed: to a ProxyChannel, which speaks HTTP/1.1."""
        self.assertEqual(self.site.acceptableProtocols(), [b"h2", b"http/1.1"])
        self.site.http2 = False
        self.assertEqual(self.site.acceptableProtocols(), [b"http/1.1"])
        admin = AdminSite(Resource(), self.clock)
        self.assertEqual(admin.acceptableProtocols(), [b"http/1.1"])


class LimitTests(H2TestCase):
    def test_a_header_over_the_line_limit_is_a_431(self) -> None:
        wire = self.connect()
        stream = wire.request(b"GET", b"/v2/", [(b"x-big", b"a" * MAX_LINE)])
        seen = wire.streams[stream]
        self.assertEqual(seen.status, 431)
        self.assertIn(b"HEADERS_TOO_LARGE", seen.body)
        self.assertEqual(self.access[-1]["refusal"], "headers_too_large")
        self.assertEqual(self.http.calls, [])

    def test_too_many_headers_is_a_431(self) -> None:
        wire = self.connect()
        headers = [(b"x-h%d" % i, b"v") for i in range(101)]
        self.assertEqual(wire.streams[wire.request(b"GET", b"/v2/", headers)].status, 431)

    def test_a_path_over_the_line_limit_is_a_414(self) -> None:
        wire = self.connect()
        stream = wire.request(b"GET", b"/v2/" + b"a" * MAX_LINE)
        self.assertEqual(wire.streams[stream].status, 414)

    def test_a_head_over_hpacks_bound_ends_the_connection(self) -> None:
        wire = self.connect()
        headers = [(b"x-h%d" % i, b"v" * 8000) for i in range(10)]  # 80 KB of headers
        wire.request(b"GET", b"/v2/", headers)
        assert wire.goaway is not None
        self.assertTrue(wire.transport.disconnecting)

    def test_a_declared_body_over_the_limit_is_a_413_before_any_byte(self) -> None:
        wire = self.connect()
        stream = wire.request(
            b"POST", b"/v2/auth", [(b"content-length", b"%d" % (MAX_BODY + 1))], end=False
        )
        seen = wire.streams[stream]
        self.assertEqual(seen.status, 413)
        self.assertIn(b"BODY_TOO_LARGE", seen.body)
        self.assertEqual(seen.reset, h2.errors.ErrorCodes.NO_ERROR)

    def test_a_body_without_a_length_is_refused_once_over_the_limit(self) -> None:
        wire = self.connect()
        wire.client.update_settings({})  # nothing: the window below is the default
        stream = wire.request(b"POST", b"/v2/auth", end=False)
        for _ in range(MAX_BODY // (16 * KiB) + 1):
            if wire.streams[stream].status is not None:
                break
            wire.client.send_data(stream, b"x" * 16 * KiB)
            wire.pump()
        self.assertEqual(wire.streams[stream].status, 413)
        self.assertFalse(wire.transport.disconnecting)

    def test_a_request_not_all_sent_in_time_is_a_408(self) -> None:
        wire = self.connect()
        stream = wire.request(b"POST", b"/v2/auth", [(b"content-length", b"10")], end=False)
        self.clock.advance(self.site.limits.client_header_timeout)
        wire.pump()
        self.assertEqual(wire.streams[stream].status, 408)

    def test_an_idle_connection_closes_with_a_goaway(self) -> None:
        wire = self.connect()
        wire.request(b"GET", b"/")
        self.clock.advance(self.site.limits.client_idle_timeout - 1)
        wire.pump()
        self.assertFalse(wire.transport.disconnecting)
        self.clock.advance(1)
        wire.pump()
        assert wire.goaway is not None
        self.assertEqual(wire.goaway.error_code, h2.errors.ErrorCodes.NO_ERROR)
        self.assertTrue(wire.transport.disconnecting)

    def test_pings_do_not_keep_a_connection_that_sends_no_request(self) -> None:
        wire = self.connect()
        for _ in range(int(self.site.limits.client_header_timeout)):
            wire.client.ping(b"12345678")
            wire.pump()
            self.clock.advance(1)
        wire.pump()
        self.assertTrue(wire.transport.disconnecting)

    def test_the_stream_bound_is_advertised(self) -> None:
        wire = self.connect()
        self.assertEqual(wire.client.remote_settings.max_concurrent_streams, MAX_STREAMS)


class ConnectionTests(H2TestCase):
    def test_an_h2_connection_holds_one_slot_until_it_closes(self) -> None:
        assert self.site.connections is not None
        wire = self.connect()
        self.assertEqual(self.site.connections.channels, {self.h2_connection(wire)})
        wire.protocol.connectionLost(_done())
        self.assertEqual(self.site.connections.open, 0)

    def test_a_drain_lets_the_stream_under_way_finish_then_closes(self) -> None:
        assert self.site.connections is not None
        wire = self.connect()
        stream = wire.request(b"GET", BLOB)
        response, _ = self.upstream_answers(100 * KiB)
        self.h2_connection(wire).drain(close_fresh=False)
        wire.pump()
        assert wire.goaway is not None
        self.assertFalse(wire.transport.disconnecting)
        assert response.protocol is not None
        for _ in range(4):
            response.protocol.dataReceived(b"x" * 25 * KiB)
            wire.take(stream)  # window updates still reach the draining connection
        response.protocol.connectionLost(_done())
        wire.pump()
        seen = wire.streams[stream]
        self.assertEqual((len(seen.body), seen.ended), (100 * KiB, True))
        self.assertTrue(wire.transport.disconnecting)


def _done() -> object:
    from twisted.python.failure import Failure
    from twisted.web.client import ResponseDone

    return Failure(ResponseDone())


def _lost() -> object:
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    return Failure(ConnectionLost())
