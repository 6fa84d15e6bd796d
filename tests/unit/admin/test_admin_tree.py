"""The admin side in the service tree (L{dockerproxy.servicetree.service_for} with
C{--admin-listen}), on a MemoryReactorClock: what it adds, in which order, and what
an admin listener beyond loopback needs before the proxy starts."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.accesslog import access_log
from dockerproxy.admin.historyfile import FILENAME
from dockerproxy.admin.pages import AdminSite
from dockerproxy.config import ConfigError, build_config
from dockerproxy.drain import ABORT_WAIT
from dockerproxy.servicetree import DockerProxyService, service_for
from dockerproxy.site import ProxySite
from tests.unit.fakes import InlineThreadPool, InlineThreadsReactor, scratch_dir
from tests.unit.proxysite import parse_response

ADMIN = "tcp:9100:interface=127.0.0.1"
START_ORDER = [
    "reload",
    "threadpool",
    "cache",
    "stats",
    "history",
    "admin",
    "drain",
    "listeners",
    "warm",
]


class AdminTreeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = InlineThreadsReactor()
        self.reactor.advance(1_800_000_000)
        self.cache = scratch_dir(self) / "cache"

    def build(self, admin: list[str]) -> DockerProxyService:
        config = build_config(
            {
                "listen": ["tcp:5000:interface=127.0.0.1"],
                "upstream": "http://127.0.0.1:9",
                "presets": False,
                "cache": {"dir": str(self.cache)},
                "admin": {"listen": admin},
            },
            {},
        )
        top = service_for(config, self.reactor, InlineThreadPool())
        self.addCleanup(self.stop, top)
        return top

    def stop(self, top: DockerProxyService) -> None:
        if top.running:
            top.stopService()
            self.reactor.advance(30 + ABORT_WAIT)

    def request(self, site: Any, path: str) -> Any:
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        return parse_response(transport.value(), "GET")

    def test_without_admin_listen_nothing_is_counted(self) -> None:
        top = self.build([])
        self.assertEqual(
            [s.name for s in top],
            ["reload", "threadpool", "cache", "stats", "drain", "listeners", "warm"],
        )
        assert top.listeners is not None
        self.assertIs(top.listeners.factory.access_log, access_log)  # type: ignore[attr-defined]

    def test_the_admin_listeners_start_before_the_drain_and_stop_after_it(self) -> None:
        top = self.build([ADMIN])
        self.assertEqual([s.name for s in top], START_ORDER)
        top.startService()
        ports = [(port, type(factory)) for port, factory, _b, _i in self.reactor.tcpServers]
        self.assertEqual(ports, [(9100, AdminSite), (5000, ProxySite)])
        admin_site = self.reactor.tcpServers[0][1]
        proxy_site = self.reactor.tcpServers[1][1]
        self.request(proxy_site, "/v2/nope")
        metrics = self.request(admin_site, "/metrics").body
        self.assertIn(
            b'dockerproxy_requests_total{method="GET",route="other",status="404"} 1.0', metrics
        )
        self.assertIn(b"dockerproxy_cache_size_bytes 0.0", metrics)
        self.assertIn(b"dockerproxy_client_connections 1.0", metrics)
        top.stopService()
        # Draining: the proxy's port is closed, the admin one still answers /readyz.
        readiness = self.request(admin_site, "/readyz")
        self.assertEqual(readiness.status, 503)
        self.assertIn("draining", readiness.json()["checks"]["draining"])
        self.reactor.pump([1.0] * int(30 + ABORT_WAIT + 1))
        saved = json.loads((self.cache / FILENAME).read_text())
        self.assertEqual(sum(row[1] for row in saved["minutes"]), 1, "the request, kept at stop")

    def test_an_admin_listener_beyond_loopback_needs_admins(self) -> None:
        """(With admins, see test_tap_auth.)"""
        for endpoint in ("tcp:9100", "tcp:9100:interface=0.0.0.0"):
            with self.assertRaises(ConfigError) as caught:
                self.build([ADMIN, endpoint])
            self.assertEqual(caught.exception.key, "admin.listen")
            self.assertIn(f"{endpoint!r} listens beyond loopback", str(caught.exception))

    def test_a_loopback_admin_listener_asks_no_credentials(self) -> None:
        top = self.build([ADMIN])
        top.startService()
        admin_site = self.reactor.tcpServers[0][1]
        self.assertEqual(self.request(admin_site, "/healthz").status, 200)
