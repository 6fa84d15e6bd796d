"""The HTTP channel's limits, driven with raw bytes over a StringTransport and a Clock:
oversize heads and bodies, slow and idle clients, unparseable requests, the
connection bound. Every refusal is a registry JSON error, then the connection closes.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from dockerproxy.channel import LINGER, MAX_BODY, MAX_HEAD, MAX_LINE
from dockerproxy.listeners import ConnectionLimit
from dockerproxy.site import ProxySite
from tests.unit.channelsite import HEADER_TIMEOUT, IDLE_TIMEOUT, LIMITS, ChannelTestCase, head
from tests.unit.fakes import Capture
from tests.unit.proxysite import MIRROR, parse_response


@implementer(ITCPTransport)
class TCPStringTransport(StringTransport):
    """A StringTransport that can half-close, as a TCP connection can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


# --------------------------------------------------------------------------- heads


class HeadLimitTests(ChannelTestCase):
    def test_a_header_line_over_16_kib_gets_431(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/nope", "X-Big: " + "a" * MAX_LINE))
        self.assertRefused(transport, 431, "HEADERS_TOO_LARGE")
        self.assertClosedAfterLinger(transport)

    def test_an_unfinished_header_line_over_16_kib_is_refused_at_once(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET /nope HTTP/1.1\r\nX-Big: " + b"a" * (MAX_LINE + 10))
        self.assertRefused(transport, 431, "HEADERS_TOO_LARGE")

    def test_a_header_line_of_16_kib_is_read(self) -> None:
        channel, transport = self.connect()
        line = "X-Big: " + "a" * (MAX_LINE - len("X-Big: "))
        channel.dataReceived(head("/nope", line))
        self.assertRegistryError(parse_response(transport.value(), "GET"), 404, "NOT_FOUND")

    def test_a_request_line_over_16_kib_gets_414(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/" + "a" * MAX_LINE))
        self.assertRefused(transport, 414, "URI_TOO_LONG")

    def test_a_head_over_64_kib_gets_431(self) -> None:
        lines = [f"X-Filler-{i}: " + "a" * 8000 for i in range(MAX_HEAD // 8000 + 1)]
        channel, transport = self.connect()
        channel.dataReceived(head("/nope", *lines))
        self.assertRefused(transport, 431, "HEADERS_TOO_LARGE")
        self.assertEqual(self.upstream.seen, [])

    def test_more_than_100_header_lines_get_431(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/nope", *(f"X-{i}: y" for i in range(99))))  # + Host
        self.assertRegistryError(parse_response(transport.value(), "GET"), 404, "NOT_FOUND")
        channel, transport = self.connect()
        channel.dataReceived(head("/nope", *(f"X-{i}: y" for i in range(100))))
        self.assertRefused(transport, 431, "HEADERS_TOO_LARGE")

    def test_a_head_request_is_refused_without_a_body(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/nope", "X-Big: " + "a" * MAX_LINE, method="HEAD"))
        response = parse_response(transport.value(), "HEAD")
        self.assertEqual(response.status, 431)
        self.assertTrue(transport.value().endswith(b"\r\n\r\n"))

    def test_nothing_after_a_refusal_is_parsed(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/nope", "X-Big: " + "a" * MAX_LINE) + head("/v2/"))
        channel.dataReceived(head("/v2/"))
        self.assertRefused(transport, 431, "HEADERS_TOO_LARGE")
        self.assertEqual(self.upstream.seen, [])

    def test_a_refusal_half_closes_a_tcp_connection(self) -> None:
        channel, transport = self.connect(TCPStringTransport())
        channel.dataReceived(head("/nope", "X-Big: " + "a" * MAX_LINE))
        self.assertTrue(transport.write_closed)
        self.assertClosedAfterLinger(transport)

    def test_a_refusal_is_logged(self) -> None:
        channel, _transport = self.connect()
        channel.dataReceived(head("/v2/", *(f"X-{i}: y" for i in range(101))))
        [event] = self.access
        self.assertEqual((event["method"], event["path"], event["status"]), ("GET", "/v2/", 431))
        self.assertTrue(event["complete"])

    def test_a_refusal_has_a_request_id_and_a_reason(self) -> None:
        """The channel's refusals log through the same function as answered requests:
        with a request id, echoed to the client, and why the proxy refused it."""
        channel, transport = self.connect()
        channel.dataReceived(head("/v2/", *(f"X-{i}: y" for i in range(101))))
        [event] = self.access
        response = self.assertRefused(transport, 431, "HEADERS_TOO_LARGE")
        self.assertEqual(response.header("x-request-id"), event["request_id"])
        self.assertRegex(event["request_id"], "^[0-9a-f]{16}$")
        self.assertEqual(event["refusal"], "headers_too_large")
        self.assertEqual(event["route"], "ping")

    def test_a_client_that_leaves_mid_head_logs_nothing(self) -> None:
        channel, _transport = self.connect()
        channel.dataReceived(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.access, [])


class BadRequestTests(ChannelTestCase):
    """Twisted's own answer to what it cannot parse is a bare 400 with no body."""

    def test_a_bad_request_line_is_a_json_400(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"NONSENSE\r\n\r\n")
        self.assertRefused(transport, 400, "INVALID_REQUEST")

    def test_a_bad_header_is_a_json_400(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        self.assertRefused(transport, 400, "INVALID_REQUEST")

    def test_a_bad_content_length_is_a_json_400(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/v2/auth", "Content-Length: ten", method="POST"))
        self.assertRefused(transport, 400, "INVALID_REQUEST")

    def test_malformed_chunks_are_a_json_400(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(
            head("/v2/auth", "Transfer-Encoding: chunked", method="POST") + b"zz\r\n"
        )
        self.assertRefused(transport, 400, "INVALID_REQUEST")


# --------------------------------------------------------------------------- bodies


class BodyLimitTests(ChannelTestCase):
    def setUp(self) -> None:
        super().setUp()

        def no_temporary_files(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a request body was spooled to disk")

        self.patch(tempfile, "TemporaryFile", no_temporary_files)

    def test_a_content_length_over_64_kib_gets_413_before_the_body(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(
            head(
                "/v2/auth", f"Content-Length: {3 * 1024**3}", "Expect: 100-continue", method="POST"
            )
        )
        self.assertRefused(transport, 413, "BODY_TOO_LARGE")
        self.assertNotIn(b"100 Continue", transport.value())
        channel.dataReceived(b"x" * 65536)  # the body the client sends anyway is dropped
        self.assertClosedAfterLinger(transport)

    def test_a_chunked_body_gets_413_as_soon_as_it_passes_64_kib(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/v2/auth", "Transfer-Encoding: chunked", method="POST"))
        chunk = b"%x\r\n%s\r\n" % (40 * 1024, b"x" * 40 * 1024)
        channel.dataReceived(chunk)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(chunk)
        self.assertRefused(transport, 413, "BODY_TOO_LARGE")
        channel.dataReceived(chunk * 10 + b"0\r\n\r\n")
        self.assertRefused(transport, 413, "BODY_TOO_LARGE")

    def test_a_chunked_body_over_64_kib_in_one_read_is_refused(self) -> None:
        channel, transport = self.connect()
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY + 1, b"x" * (MAX_BODY + 1))
        channel.dataReceived(head("/v2/auth", "Transfer-Encoding: chunked", method="POST") + body)
        self.assertRefused(transport, 413, "BODY_TOO_LARGE")

    def test_the_small_form_of_post_v2_auth_is_read_in_memory(self) -> None:
        form = b"grant_type=password&service=x&scope=repository:a:pull&username=u&password=p"
        for framing in (f"Content-Length: {len(form)}", "Transfer-Encoding: chunked"):
            channel, transport = self.connect()
            body = (
                form
                if framing.startswith("Content")
                else (b"%x\r\n%s\r\n0\r\n\r\n" % (len(form), form))
            )
            channel.dataReceived(head("/v2/auth", framing, method="POST") + body)
            self.assertRegistryError(parse_response(transport.value(), "POST"), 404, "UNSUPPORTED")

    def test_a_body_of_64_kib_is_read(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(
            head("/v2/auth", f"Content-Length: {MAX_BODY}", method="POST") + b"x" * MAX_BODY
        )
        self.assertEqual(parse_response(transport.value(), "POST").status, 404)


# --------------------------------------------------------------------------- slow and idle clients


class DeadlineTests(ChannelTestCase):
    def test_a_trickled_head_gets_408_at_the_deadline(self) -> None:
        """One header line every 20 s used to restart Twisted's timer for good."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET /nope HTTP/1.1\r\n")
        channel.dataReceived(b"X-1: a\r\n")
        self.clock.advance(20)
        channel.dataReceived(b"X-2: a\r\n")
        self.clock.advance(9.9)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        response = self.assertRefused(transport, 408, "REQUEST_TIMEOUT")
        self.assertIn("30 seconds", response.json()["errors"][0]["message"])
        channel.dataReceived(b"X-3: a\r\n\r\n")
        self.assertClosedAfterLinger(transport)

    def test_a_trickled_body_gets_408_at_the_deadline(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/v2/auth", "Content-Length: 100", method="POST"))
        for _ in range(3):
            self.clock.advance(10)
            channel.dataReceived(b"x")
        self.assertRefused(transport, 408, "REQUEST_TIMEOUT")

    def test_a_fresh_connection_that_sends_nothing_is_closed_silently(self) -> None:
        _channel, transport = self.connect()
        self.clock.advance(HEADER_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_the_first_request_deadline_runs_from_the_accept(self) -> None:
        channel, transport = self.connect()
        self.clock.advance(HEADER_TIMEOUT - 1)
        channel.dataReceived(b"GET /nope HTTP/1.1\r\n")
        self.clock.advance(1)
        self.assertRefused(transport, 408, "REQUEST_TIMEOUT")

    def test_an_idle_keep_alive_connection_is_closed_silently(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/nope"))
        answered = transport.value()
        self.assertEqual(parse_response(answered, "GET").status, 404)
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), answered)
        self.clock.advance(IDLE_TIMEOUT)
        self.assertTrue(transport.disconnected, "a client that takes nothing is cut")

    def test_the_next_request_has_its_own_deadline_from_its_first_byte(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/nope"))
        self.clock.advance(IDLE_TIMEOUT - 1)
        transport.clear()
        channel.dataReceived(b"GET /nope HTTP/1.1\r\n")
        self.clock.advance(HEADER_TIMEOUT - 1)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(f"Host: {MIRROR}\r\n\r\n".encode())
        self.assertEqual(parse_response(transport.value(), "GET").status, 404)
        self.assertFalse(transport.disconnecting)

    def test_pipelined_requests_are_all_answered(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/nope") + head("/nope") + b"GET /no")
        self.assertEqual(transport.value().count(b"HTTP/1.1 404"), 2)
        self.clock.advance(HEADER_TIMEOUT)
        self.assertEqual(transport.value().count(b"HTTP/1.1 408"), 1, "a partial head")

    def test_no_timer_runs_while_a_response_is_produced(self) -> None:
        capture = Capture()
        site = ProxySite(capture, self.clock, LIMITS)
        channel, transport = self.connect(site=site)
        channel.dataReceived(head("/blob"))
        [request] = capture.requests
        request.write(b"first bytes of a long download")
        self.clock.advance(10 * (HEADER_TIMEOUT + IDLE_TIMEOUT + LINGER))
        self.assertFalse(transport.disconnecting)
        request.finish()
        self.clock.advance(IDLE_TIMEOUT)
        self.assertTrue(transport.disconnecting, "idle once the response is done")

    def test_a_client_that_leaves_cancels_the_timers(self) -> None:
        channel, _transport = self.connect()
        channel.dataReceived(b"GET /nope HTTP/1.1\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])


# --------------------------------------------------------------------------- connection bound


class ConnectionBoundTests(ChannelTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.events: list[str] = []
        self.site.connections = ConnectionLimit(
            2, lambda: self.events.append("pause"), lambda: self.events.append("resume"), self.clock
        )

    def test_accepting_pauses_at_the_bound_and_resumes_below_it(self) -> None:
        first, _ = self.connect()
        self.assertEqual(self.events, [])
        self.connect()
        self.assertEqual(self.events, ["pause"])
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.events, ["pause", "resume"])
        self.connect()
        self.assertEqual(self.events, ["pause", "resume", "pause"])

    def test_a_connection_accepted_past_the_bound_is_closed_and_not_counted(self) -> None:
        self.connect()
        self.connect()
        extra, transport = self.connect()
        self.assertTrue(transport.disconnected)
        extra.connectionLost(Failure(ConnectionDone()))
        assert self.site.connections is not None
        self.assertEqual(self.site.connections.open, 2)
        self.assertEqual(self.events, ["pause"])


def test_error_bodies_are_registry_json() -> None:
    from dockerproxy.channel import BODY_TOO_LARGE, error_response

    raw = error_response(BODY_TOO_LARGE)
    head_part, _, body = raw.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body)["errors"][0]["code"] == "BODY_TOO_LARGE"
    assert b"Content-Length: %d" % len(body) in head_part
