"""A reload reaches the Site: access settings and client limits for what comes next, the
deadlines of open connections from their next wait on, and the connection bound."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from dockerproxy.config import Config, build_config
from dockerproxy.listeners import ConnectionLimit
from tests.unit.channelsite import ChannelTestCase, head
from tests.unit.fakes import lines_logged

PEER = "192.168.1.1"  # StringTransport's peer


def reloaded(**limits: float) -> Config:
    return build_config({"limits": limits, "access": {"trusted_proxies": ["192.168.1.0/24"]}}, {})


class SiteApplyTests(ChannelTestCase):
    def test_access_settings_apply_to_the_next_request(self) -> None:
        logged = lines_logged(self)
        forwarded = head("/nope", "X-Forwarded-For: 203.0.113.7")
        channel, _ = self.connect()
        channel.dataReceived(forwarded)
        self.site.apply(reloaded())
        channel.dataReceived(forwarded)
        clients = [line.split()[0] for line in logged if " /nope " in line]
        self.assertEqual(clients, [PEER, "203.0.113.7"], "the peer is trusted from now on")

    def test_new_connections_get_the_new_limits(self) -> None:
        self.site.apply(reloaded(client_header_timeout=5))
        channel, transport = self.connect()
        channel.dataReceived(b"GET /nope HTTP/1.1\r\n")
        self.clock.advance(5)
        self.assertIn(b" 408 ", transport.value())

    def test_an_open_connection_takes_the_new_limits_at_its_next_wait(self) -> None:
        self.site.connections = ConnectionLimit(
            10, lambda: None, lambda: None, self.clock, make_room=lambda n: None
        )
        channel, transport = self.connect()
        channel.dataReceived(head("/nope"))
        self.site.apply(reloaded(client_idle_timeout=5))
        self.clock.advance(5)
        self.assertFalse(transport.disconnecting, "this wait began before the reload")
        channel.dataReceived(head("/nope"))
        self.assertEqual(transport.value().count(b"HTTP/1.1 404"), 2)
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting, "the next wait is the new one")


class BoundTests(ChannelTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.events: list[str] = []
        self.room: list[int] = []
        self.site.connections = ConnectionLimit(
            2,
            lambda: self.events.append("pause"),
            lambda: self.events.append("resume"),
            self.clock,
            make_room=self.room.append,
        )

    def test_a_raised_bound_resumes_accepting_and_makes_room(self) -> None:
        self.connect()
        self.connect()
        self.assertEqual(self.events, ["pause"])
        self.site.apply(reloaded(max_connections=3))
        self.assertEqual((self.events, self.room), (["pause", "resume"], [3]))
        self.connect()
        self.assertEqual(self.events, ["pause", "resume", "pause"])

    def test_a_lowered_bound_pauses_and_keeps_the_open_connections(self) -> None:
        first, first_transport = self.connect()
        second, _ = self.connect()
        self.site.apply(reloaded(max_connections=1))
        self.assertEqual(self.events, ["pause"])
        self.assertFalse(first_transport.disconnecting)
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.events, ["pause"], "still at the bound")
        second.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.events, ["pause", "resume"])

    def test_the_same_bound_changes_nothing(self) -> None:
        self.site.apply(reloaded(max_connections=2))
        self.assertEqual((self.events, self.room), ([], []))
