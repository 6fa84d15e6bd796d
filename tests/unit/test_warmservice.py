"""The [[warm]] refresh on a Clock (L{dockerproxy.warmservice}): its schedule, one run at a
time, the stop, reloads and failures, against a registry in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from dockerproxy.auth import Challenge
from dockerproxy.config import Config
from dockerproxy.config.warm import WarmEntry
from dockerproxy.imagerefs import Platform, parse_image
from dockerproxy.warming import TokenLogin
from dockerproxy.warmservice import WarmRefresh, listener_url, token_authorize
from tests.unit.fakeregistry import BASE, FakeRegistry
from tests.unit.fakes import lines_logged

AMD64 = (Platform("linux", "amd64"),)


def entry(*images: str, interval: float = 60.0) -> WarmEntry:
    return WarmEntry(tuple(parse_image(i) for i in images), AMD64, interval)


APP, OTHER = entry("library/app:1"), entry("library/other:1")


class RefreshTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = FakeRegistry()
        self.registry.image("library/app", "1", [b"app layer", b"app data"])
        self.registry.image("library/other", "1", [b"other layer"])
        self.stub = self.registry.stub()
        self.url: str | None = BASE
        self.closed: list[bool] = []
        self.lines = lines_logged(self)

    def refresh(self, *entries: WarmEntry) -> WarmRefresh:
        refresh = WarmRefresh(
            self.clock,
            entries,
            lambda: self.url,
            self.stub,
            TokenLogin(self.stub),
            close=lambda: self.closed.append(True),
        )
        refresh.startService()
        return refresh

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.stub.flush()

    def tag_gets(self, name: str) -> int:
        """Requests for the tag that carried a token (each run makes exactly one)."""
        path = f"/v2/{name}/manifests/1"
        return sum(1 for s in self.registry.seen if s.path == path and s.authorization)

    def test_runs_at_start_then_every_interval(self) -> None:
        refresh = self.refresh(APP)
        self.advance(0)
        self.assertEqual((refresh.runs, self.tag_gets("library/app")), (1, 1))
        blobs = [p for p in self.registry.paths() if "/blobs/" in p]
        self.assertEqual(len(blobs), 3)
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [60.0])
        self.advance(59.9)
        self.assertEqual(self.tag_gets("library/app"), 1)
        self.advance(0.1)
        self.assertEqual((refresh.runs, self.tag_gets("library/app")), (2, 2))
        self.assertIn("warm: refreshed 1 images, 0 failed", self.lines)

    def test_one_run_at_a_time_and_the_next_interval_counts_from_its_end(self) -> None:
        self.registry.hold_blobs = True
        refresh = self.refresh(entry("library/app:1", interval=1))
        self.advance(0)
        self.assertEqual(len(self.registry.held), 3)
        self.advance(10)  # due nine times over while the run goes on: no second run
        self.assertEqual((refresh.runs, self.tag_gets("library/app")), (0, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.registry.release()
        self.stub.flush()
        self.assertEqual(refresh.runs, 1)
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [11.0])

    def test_a_stop_cancels_the_run_under_way_and_leaves_nothing_scheduled(self) -> None:
        self.registry.hold_blobs = True
        refresh = self.refresh(APP)
        self.advance(0)
        self.assertIsNotNone(refresh.run)
        refresh.stopService()
        self.assertIsNone(refresh.run)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.closed, [True])
        self.assertFalse([line for line in self.lines if "failed" in line], self.lines)
        self.advance(3600)
        self.assertEqual(self.tag_gets("library/app"), 1)

    def test_a_stalled_body_fails_its_image_after_the_idle_timeout(self) -> None:
        self.registry.stall_blobs = True
        refresh = self.refresh(APP)
        self.advance(0)
        self.assertEqual(len(self.registry.held), 3)
        self.advance(59)
        self.assertEqual(refresh.runs, 0)
        self.advance(1)
        self.assertEqual(refresh.runs, 1)
        self.assertIn("warm: library/app:1 failed: the body stalled for 60 s", self.lines)
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [120.0])

    def test_a_stop_before_the_first_run(self) -> None:
        refresh = self.refresh(APP)
        refresh.stopService()
        self.advance(3600)
        self.assertEqual(self.registry.seen, [])

    def test_a_failing_image_is_one_line_a_run_and_the_others_go_on(self) -> None:
        self.refresh(entry("library/nothing:1", "library/app:1"))
        self.advance(0)
        failures = [line for line in self.lines if "failed:" in line]
        self.assertEqual(
            failures, ["warm: library/nothing:1 failed: manifest 1: 404 manifests unknown"]
        )
        self.assertEqual(self.tag_gets("library/app"), 1)
        self.assertIn("warm: refreshed 2 images, 1 failed", self.lines)
        self.advance(60)
        self.assertEqual(len([line for line in self.lines if "failed:" in line]), 2)

    def test_without_a_listener_nothing_is_pulled(self) -> None:
        self.url = None
        refresh = self.refresh(APP)
        self.advance(0)
        self.assertEqual(self.registry.seen, [])
        self.assertEqual(
            [line for line in self.lines if line.startswith("warm:")],
            ["warm: no tcp: or ssl: listener to pull through; nothing warmed"],
        )
        self.assertEqual(refresh.runs, 1)

    def test_a_reload_runs_new_entries_at_once_and_keeps_the_others_schedule(self) -> None:
        refresh = self.refresh(APP)
        self.advance(0)
        self.advance(30)
        refresh.apply(Config(warm=(APP, OTHER)))
        self.advance(0)
        self.assertEqual((self.tag_gets("library/app"), self.tag_gets("library/other")), (1, 1))
        self.advance(30)  # APP's time (60), OTHER's is 90
        self.assertEqual((self.tag_gets("library/app"), self.tag_gets("library/other")), (2, 1))
        refresh.apply(Config(warm=(OTHER,)))
        for _ in range(10):
            self.advance(60)
        self.assertEqual(self.tag_gets("library/app"), 2)
        self.assertGreater(self.tag_gets("library/other"), 5)
        refresh.apply(Config())
        self.assertEqual(self.clock.getDelayedCalls(), [])


@implementer(IOpenSSLServerConnectionCreator)
class NoCertificate:
    def serverConnectionForTLS(self, protocol: Any) -> Any:
        raise NotImplementedError


@dataclass
class FakePort:
    address: Any
    factory: Any = None

    def getHost(self) -> Any:
        return self.address


class ListenerURLTests(SynchronousTestCase):
    def test_the_first_tcp_port_from_this_machine(self) -> None:
        tls = TLSMemoryBIOFactory(NoCertificate(), False, Site(Resource()))
        cases: list[tuple[list[FakePort], str | None]] = [
            ([FakePort(IPv4Address("TCP", "0.0.0.0", 5000))], "http://127.0.0.1:5000"),
            ([FakePort(IPv4Address("TCP", "10.0.0.2", 80))], "http://10.0.0.2:80"),
            ([FakePort(IPv6Address("TCP", "::", 5000))], "http://[::1]:5000"),
            ([FakePort(IPv6Address("TCP", "::1", 5000))], "http://[::1]:5000"),
            ([FakePort(IPv4Address("TCP", "0.0.0.0", 443), tls)], "https://127.0.0.1:443"),
            (
                [FakePort(UNIXAddress(b"/run/x.sock")), FakePort(IPv6Address("TCP", "::", 9))],
                "http://[::1]:9",
            ),
            ([FakePort(UNIXAddress(b"/run/x.sock"))], None),
            ([], None),
        ]
        for ports, url in cases:
            self.assertEqual(listener_url(ports), url)


class TokenAuthorizeTests(SynchronousTestCase):
    def authorize(self, scope: str) -> bytes | None:
        signed: list[str] = []

        def sign(repository: str) -> str:
            signed.append(repository)
            return f"signed-{repository}"

        result: list[bytes | None] = []
        challenge = Challenge("bearer", {"realm": "x", "scope": scope})
        Deferred.fromCoroutine(token_authorize(sign)(challenge)).addCallback(result.append)
        return result[0]

    def test_a_token_for_the_scopes_repository(self) -> None:
        self.assertEqual(
            self.authorize("repository:ghcr.io/acme/app:pull"), b"Bearer signed-ghcr.io/acme/app"
        )
        self.assertIsNone(self.authorize(""))
        self.assertIsNone(self.authorize("registry:catalog:*"))
