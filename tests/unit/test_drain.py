"""A graceful stop, driven with raw bytes over StringTransports and a Clock: idle
connections close at once, a response under way finishes and then its connection
closes, the drain ends as soon as the last connection is gone, and what is left at
the deadline is aborted."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from dockerproxy.channel import ProxyChannel
from dockerproxy.drain import FRESH_GRACE, Drain
from dockerproxy.listeners import ConnectionLimit
from tests.unit.channelsite import ChannelTestCase, head
from tests.unit.proxysite import HUB_HOST, parse_response

DRAIN_TIMEOUT = 30.0


class DrainTestCase(ChannelTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.held: list[Request] = []
        self.upstream.on(HUB_HOST, "/v2/", self.hold)

    def hold(self, request: Request) -> Any:
        """The upstream answers /v2/ only when the test calls L{answer}."""
        self.held.append(request)
        return NOT_DONE_YET

    def answer(self) -> None:
        for request in self.held:
            request.setResponseCode(401)
            request.write(b'{"errors":[]}')
            request.finish()
        self.pump()


class ChannelDrainTests(DrainTestCase):
    def test_an_idle_keep_alive_connection_closes_at_once(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/nope"))
        answered = transport.value()
        channel.drain(close_fresh=False)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), answered, "closed silently")

    def test_a_fresh_connection_gets_a_moment_to_send_its_request(self) -> None:
        channel, transport = self.connect()
        channel.drain(close_fresh=False)
        self.assertFalse(transport.disconnecting, "its request may be unread in the socket")
        channel.drain(close_fresh=True)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_a_request_sent_after_the_drain_began_is_answered_then_closed(self) -> None:
        channel, transport = self.connect()
        channel.drain(close_fresh=False)
        channel.dataReceived(head("/nope"))
        response = parse_response(transport.value(), "GET")
        self.assertEqual(response.status, 404)
        self.assertEqual(response.header("connection"), "close")
        self.assertTrue(transport.disconnecting)

    def test_a_response_under_way_finishes_and_says_connection_close(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head("/v2/"))  # waiting for the upstream
        channel.drain(close_fresh=True)
        self.assertFalse(transport.disconnecting)
        self.answer()
        response = parse_response(transport.value(), "GET")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header("connection"), "close")
        self.assertTrue(transport.disconnecting)

    def test_a_request_being_received_is_answered_then_closed(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET /nope HTTP/1.1\r\n")
        channel.drain(close_fresh=True)
        channel.dataReceived(b"Host: mirror.test:5000\r\n\r\n")
        response = parse_response(transport.value(), "GET")
        self.assertEqual((response.status, response.header("connection")), (404, "close"))
        self.assertTrue(transport.disconnecting)


class DrainServiceTests(DrainTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.connections = ConnectionLimit(100, lambda: None, lambda: None, self.clock)
        self.site.connections = self.connections
        self.drain = Drain(self.connections, self.clock, DRAIN_TIMEOUT)
        self.drain.startService()

    def stop(self) -> list[Any]:
        done: list[Any] = []
        self.drain.stopService().addBoth(done.append)
        return done

    def lose(self, channel: ProxyChannel) -> None:
        """What the reactor does once a closing transport is gone."""
        channel.connectionLost(Failure(ConnectionDone()))

    def test_with_no_connection_open_the_stop_is_immediate(self) -> None:
        self.assertEqual(self.stop(), [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_stop_ends_as_soon_as_the_last_response_is_done(self) -> None:
        idle, idle_transport = self.connect()
        idle.dataReceived(head("/nope"))
        busy, busy_transport = self.connect()
        busy.dataReceived(head("/v2/"))  # waiting for the upstream
        done = self.stop()
        self.assertTrue(idle_transport.disconnecting)
        self.lose(idle)
        self.clock.advance(DRAIN_TIMEOUT / 2)
        self.assertEqual(done, [])
        self.answer()
        self.assertEqual(parse_response(busy_transport.value(), "GET").status, 401)
        self.assertTrue(busy_transport.disconnecting)
        self.lose(busy)
        self.assertEqual(done, [None], "no wait for the deadline")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(busy_transport.disconnected, "closed, not aborted")

    def test_a_silent_fresh_connection_is_closed_after_the_grace(self) -> None:
        fresh, transport = self.connect()
        done = self.stop()
        self.clock.advance(FRESH_GRACE - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.lose(fresh)
        self.assertEqual(done, [None])

    def test_what_is_left_at_the_deadline_is_aborted(self) -> None:
        busy, transport = self.connect()
        busy.dataReceived(head("/v2/"))  # the upstream never answers
        done = self.stop()
        self.clock.advance(DRAIN_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected, "aborted: no complete-looking body")
        self.assertEqual(done, [])
        self.lose(busy)
        self.assertEqual(done, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_stop_ends_even_if_an_aborted_connection_lingers(self) -> None:
        busy, _transport = self.connect()
        busy.dataReceived(head("/v2/"))
        done = self.stop()
        self.clock.advance(DRAIN_TIMEOUT)
        self.clock.advance(1.0)
        self.assertEqual(done, [None])


def test_all_closed_fires_when_the_last_connection_is_released() -> None:
    from twisted.internet.task import Clock

    limit = ConnectionLimit(10, lambda: None, lambda: None, Clock())
    a, b = object(), object()
    assert limit.admit(a) and limit.admit(b)
    fired: list[Any] = []
    limit.all_closed().addCallback(fired.append)
    cancelled = limit.all_closed()
    cancelled.addErrback(lambda f: None)
    cancelled.cancel()
    limit.release(a)
    assert fired == [] and limit.open == 1
    limit.release(b)
    limit.release(b)  # twice: counted once
    assert fired == [None] and limit.open == 0
    now: list[Any] = []
    limit.all_closed().addCallback(now.append)
    assert now == [None]
