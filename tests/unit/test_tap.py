"""The service tree on a MemoryReactorClock: building it touches nothing, starting it
listens and starts each part, stopping it goes listeners, drain, then the rest."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from typing import Any

from twisted.application.service import Application, IService
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.config import build_config
from dockerproxy.drain import ABORT_WAIT
from dockerproxy.listeners import Listeners, ListenFailed
from dockerproxy.logs import LogFormat
from dockerproxy.servicetree import DockerProxyService, service_for
from dockerproxy.site import ProxySite
from dockerproxy.workers.adoption import WorkerSockets
from tests.unit.fakes import InlineThreadPool, InlineThreadsReactor, lines_logged, scratch_dir

DRAIN = 12.0
LISTEN = ["tcp:5000:interface=127.0.0.1", "tcp:5001:interface=127.0.0.1"]
START_ORDER = ["reload", "threadpool", "cache", "stats", "s3", "drain", "listeners", "warm"]
PING = b"GET /v2/ HTTP/1.1\r\nHost: mirror.test\r\n\r\n"


class TreeTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = InlineThreadsReactor()
        self.threadpool = InlineThreadPool()
        self.cache = scratch_dir(self) / "cache"
        self.config = build_config(
            {
                "listen": LISTEN,
                "upstream": "http://127.0.0.1:9",
                "presets": False,
                "drain_timeout": DRAIN,
                "cache": {
                    "dir": str(self.cache),
                    "s3": {
                        "endpoint": "http://127.0.0.1:8",
                        "bucket": "blobs",
                        "access_key_id": "k",
                        "secret_access_key": "s",
                    },
                },
            },
            {},
        )

    def build(self) -> DockerProxyService:
        top = service_for(self.config, self.reactor, self.threadpool)
        self.addCleanup(self.stop_if_running, top)
        return top

    def stop_if_running(self, top: DockerProxyService) -> None:
        if top.running:
            top.stopService()
            self.reactor.advance(DRAIN + ABORT_WAIT)

    def connect(self, top: DockerProxyService) -> tuple[Any, StringTransport]:
        assert top.listeners is not None
        site = top.listeners.factory
        assert isinstance(site, ProxySite)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport


class BuildTests(TreeTestCase):
    def test_building_touches_no_disk_no_network_and_starts_nothing(self) -> None:
        top = self.build()
        self.assertEqual([IService(child).name for child in top], START_ORDER)
        self.assertFalse(self.cache.exists(), "no directory made, no scan")
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.reactor.whenRunningHooks, [])
        self.assertFalse(top.threadpool.started)
        self.assertFalse(any(IService(child).running for child in top))

    def test_in_a_fleet_redis_calls_end_after_the_caches_last_writes(self) -> None:
        """The fleet's pool starts before the cache and so stops after it: the access
        records the cache writes at its stop still reach Redis (or fall back)."""
        self.config = replace(
            self.config, fleet=replace(self.config.fleet, redis="redis://127.0.0.1:9/0")
        )
        top = self.build()
        names = [IService(child).name for child in top]
        self.assertEqual(names, [*START_ORDER[:2], "fleet", *START_ORDER[2:]])
        fleet = top.getServiceNamed("fleet")
        self.assertFalse(fleet.threadpool.started, "built, not started")
        top.startService()
        self.assertTrue(fleet.threadpool.started)
        top.stopService()
        self.reactor.advance(DRAIN + ABORT_WAIT)
        self.assertFalse(fleet.running)
        self.assertFalse(fleet.threadpool.started, "its threads joined")

    def test_a_crashed_fill_is_cleared_at_start_not_at_build(self) -> None:
        leftover = self.cache / "tmp" / "fill-crashed.partial"
        leftover.parent.mkdir(parents=True)
        leftover.write_bytes(b"half")
        top = self.build()
        self.assertTrue(leftover.exists())
        top.startService()
        self.assertFalse(leftover.exists())


class StartTests(TreeTestCase):
    def test_the_site_offers_h2_by_alpn_only_with_http2(self) -> None:
        for http2, offered in ((False, [b"http/1.1"]), (True, [b"h2", b"http/1.1"])):
            self.config = replace(self.config, http2=http2)
            top = self.build()
            assert top.listeners is not None
            site = top.listeners.factory
            assert isinstance(site, ProxySite)
            self.assertEqual(site.acceptableProtocols(), offered)

    def test_start_listens_on_each_endpoint_and_starts_each_part(self) -> None:
        top = self.build()
        top.startService()
        self.assertEqual(
            [(port, interface) for port, _f, _b, interface in self.reactor.tcpServers],
            [(5000, "127.0.0.1"), (5001, "127.0.0.1")],
        )
        assert top.listeners is not None
        self.assertTrue(
            all(factory is top.listeners.factory for _p, factory, _b, _i in self.reactor.tcpServers)
        )
        self.assertTrue(all(IService(child).running for child in top))
        self.assertTrue((self.cache / "blobs").is_dir())
        self.assertTrue((self.cache / "meta" / "stats.json").is_file(), "saved by the timer")
        self.assertTrue(top.threadpool.started)
        self.assertEqual(
            [(host, port) for host, port, *_ in self.reactor.tcpClients],
            [("127.0.0.1", 8)],
            "the S3 bucket check",
        )

    def test_the_caches_disk_work_runs_on_the_trees_thread_pool(self) -> None:
        """The scan at start is inline (nothing is served yet); the counters the stats
        timer saves at once are written by the tree's own pool."""
        top = self.build()
        self.assertIs(top.threadpool, self.threadpool)
        top.startService()
        self.assertEqual(self.threadpool.called, ["write_meta"])

    def test_a_port_that_cannot_be_listened_on_names_the_endpoint(self) -> None:
        class Refusing(MemoryReactorClock):
            def listenTCP(
                self, port: int, factory: Any, backlog: int = 50, interface: str = ""
            ) -> Any:
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))

        listeners = Listeners(Refusing(), LISTEN[:1], ProxySite.__new__(ProxySite))
        with self.assertRaises(ListenFailed) as caught:
            listeners.privilegedStartService()
        self.assertEqual(
            str(caught.exception),
            f"--listen: cannot listen on {LISTEN[0]!r}: Address already in use",
        )


class StopTests(TreeTestCase):
    def start(self) -> tuple[DockerProxyService, list[str]]:
        top = self.build()
        top.startService()
        stopped: list[str] = []
        for child in top:
            original = child.stopService

            def stop(child: Any = child, original: Any = original) -> Any:
                stopped.append(child.name)
                return original()

            child.stopService = stop  # type: ignore[method-assign]
        return top, stopped

    def test_with_nothing_in_flight_everything_stops_at_once_last_started_first(self) -> None:
        top, stopped = self.start()
        idle, idle_transport = self.connect(top)
        idle.dataReceived(b"GET / HTTP/1.1\r\nHost: mirror.test\r\n\r\n")  # the home page
        self.assertTrue(idle_transport.value().startswith(b"HTTP/1.1 200 "))
        done: list[Any] = []
        top.stopService().addBoth(done.append)
        self.assertTrue(idle_transport.disconnecting, "an idle connection closes at once")
        idle.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(done, [None])
        self.assertEqual(stopped, list(reversed(START_ORDER)))
        self.assertTrue(top.threadpool.joined)

    def test_listeners_stop_then_the_drain_waits_then_the_rest_stops(self) -> None:
        top, stopped = self.start()
        busy, transport = self.connect(top)
        busy.dataReceived(PING)  # goes upstream, which never answers on this reactor
        self.assertEqual(len(self.reactor.tcpClients), 2, "S3 and the upstream")
        done: list[Any] = []
        top.stopService().addBoth(done.append)
        self.assertEqual(stopped, ["warm", "listeners", "drain"])
        self.reactor.advance(DRAIN - 0.1)
        self.assertEqual(
            stopped, ["warm", "listeners", "drain"], "fills, S3, pool wait for the drain"
        )
        self.assertTrue(top.threadpool.started)
        self.reactor.advance(0.1)
        self.assertTrue(transport.disconnected, "aborted at the deadline")
        busy.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(stopped, list(reversed(START_ORDER)))
        self.assertEqual(done, [None])
        self.assertTrue(top.threadpool.joined)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class ReloadTests(TreeTestCase):
    """Every part that reloads is registered by the tree (and the log's observer by
    setServiceParent); what needs a restart is named."""

    def test_a_reload_reaches_each_part(self) -> None:
        settings = {
            "listen": LISTEN,
            "upstream": "http://127.0.0.1:9",
            "presets": False,
            "cache": {"enabled": False},
            "log_format": "json",
            "public_url": "https://mirror.test",
            "drain_timeout": 3,
            "limits": {"client_idle_timeout": 4, "max_connections": 50},
            "access": {"trusted_proxies": ["10.0.0.0/8"]},
            "warm": [{"images": ["alpine:3.20"], "interval": "1h"}],
        }
        new = build_config(settings, {})
        top = service_for(self.config, self.reactor, self.threadpool, load=lambda: new)
        application = Application("dockerproxy")
        top.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        assert isinstance(observer, LogFormat) and top.reloads is not None
        self.assertEqual(observer.format, "text")
        logged = lines_logged(self)
        self.assertIs(top.reloads.reload(), new)
        assert top.listeners is not None
        site = top.listeners.factory
        assert isinstance(site, ProxySite) and site.connections is not None
        self.assertEqual((site.access, site.limits), (new.access, new.limits))
        self.assertEqual(site.connections.maximum, 50)
        self.assertEqual(site.resource.proxy.public_url, "https://mirror.test")  # type: ignore[attr-defined]
        self.assertEqual(top.getServiceNamed("drain").timeout, 3)  # type: ignore[attr-defined]
        self.assertEqual(observer.format, "json")
        self.assertEqual(list(top.getServiceNamed("warm").due), list(new.warm))  # type: ignore[attr-defined]
        self.assertIn(
            "reload: changed settings that need a restart keep their running values: cache",
            logged,
        )
        self.assertEqual(logged[-1], "reload: configuration applied")

    def test_without_a_file_a_reload_keeps_the_configuration(self) -> None:
        top = self.build()
        assert top.reloads is not None
        logged = lines_logged(self)
        self.assertIs(top.reloads.reload(), self.config)
        self.assertEqual(logged, ["reload: configuration applied"])


class WorkerTreeTests(TreeTestCase):
    """A worker's tree (L{dockerproxy.workers}): the sockets its supervisor handed it are
    adopted, not listened on, and it says it is ready once everything has started."""

    def test_a_worker_adopts_its_sockets_and_says_when_it_is_ready(self) -> None:
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        handed = os.dup(sock.fileno())  # the worker's copy: adopting it closes it
        lifeline, supervisor_end = os.pipe()
        ready_read, ready = os.pipe()
        for fd in (lifeline, supervisor_end, ready_read):
            self.addCleanup(os.close, fd)
        worker = WorkerSockets(1, lifeline, ready, {LISTEN[0]: (handed, socket.AF_INET)})
        top = service_for(self.config, self.reactor, self.threadpool, worker=worker)
        self.addCleanup(self.stop_if_running, top)
        top.startService()
        self.assertEqual(
            [(fd, family) for fd, family, _ in self.reactor.adoptedPorts],
            [(handed, socket.AF_INET)],
        )
        self.assertEqual([port for port, *_ in self.reactor.tcpServers], [5001], "not handed")
        self.assertEqual(os.read(ready_read, 64), b"ready\n")
        self.assertEqual([IService(child).name for child in top][-1], "ready", "started last")
