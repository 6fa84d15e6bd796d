"""The service tree with client logins (L{dockerproxy.servicetree.service_for}): building it
touches no state directory; starting it loads or makes the signing key (one line and
exit status 2 when it cannot); logins check passwords on the tree's thread pool."""

from __future__ import annotations

import base64
import json
import stat
import sys
from io import StringIO
from typing import Any

import bcrypt
from twisted.application.service import IService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.config import build_config
from dockerproxy.drain import ABORT_WAIT
from dockerproxy.proxytokens import KEY_FILE
from dockerproxy.servicetree import DockerProxyService, service_for
from dockerproxy.site import ProxySite
from tests.unit.fakes import InlineThreadPool, InlineThreadsReactor, scratch_dir

DRAIN = 5.0


class AuthTreeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = InlineThreadsReactor()
        self.threadpool = InlineThreadPool()
        scratch = scratch_dir(self)
        self.state = scratch / "state"
        htpasswd = scratch / "htpasswd"
        htpasswd.write_text("alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
        self.toml = {
            "listen": ["tcp:5000:interface=127.0.0.1"],
            "upstream": "http://127.0.0.1:9",
            "presets": False,
            "drain_timeout": DRAIN,
            "cache": {"enabled": False},
            "state_dir": str(self.state),
            "auth": {"htpasswd": str(htpasswd), "admins": ["alice"]},
        }

    def build(self, **changes: object) -> DockerProxyService:
        top = service_for(build_config({**self.toml, **changes}, {}), self.reactor, self.threadpool)
        self.addCleanup(self.stop_if_running, top)
        return top

    def stop_if_running(self, top: DockerProxyService) -> None:
        if top.running:
            top.stopService()
            self.reactor.advance(DRAIN + ABORT_WAIT)

    def get(self, top: DockerProxyService, path: str, authorization: str | None = None) -> bytes:
        assert top.listeners is not None
        site = top.listeners.factory
        assert isinstance(site, ProxySite)
        return self.get_from(site, path, authorization)

    def get_from(self, site: Any, path: str, authorization: str | None = None) -> bytes:
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        head = f"GET {path} HTTP/1.1\r\nHost: mirror.test\r\n"
        if authorization:
            head += f"Authorization: {authorization}\r\n"
        channel.dataReceived((head + "\r\n").encode())
        return transport.value()

    def test_building_touches_no_state_directory(self) -> None:
        top = self.build()
        names = [IService(child).name for child in top]
        self.assertEqual(names[:3], ["reload", "threadpool", "signing-key"])
        self.assertFalse(self.state.exists())
        assert top.client_auth is not None
        admitted = Deferred.fromCoroutine(top.client_auth.check_admin("192.0.2.1", "alice", "pw"))
        self.assertTrue(self.successResultOf(admitted))

    def test_start_makes_the_key_and_logins_run_on_the_pool(self) -> None:
        top = self.build()
        top.startService()
        key = self.state / KEY_FILE
        self.assertEqual(stat.S_IMODE(key.stat().st_mode), 0o600)
        self.assertIn(b"401 Unauthorized", self.get(top, "/v2/"))
        login = "Basic " + base64.b64encode(b"alice:pw").decode()
        response = self.get(top, "/v2/auth?scope=repository:library/alpine:pull", login)
        self.assertIn(b"200 OK", response)
        self.assertIn("_checkpw", self.threadpool.called)
        token = json.loads(response.partition(b"\r\n\r\n")[2])["token"]
        self.assertIn(b"200 OK", self.get(top, "/v2/", f"Bearer {token}"))

    def test_a_key_it_cannot_keep_stops_the_proxy_with_one_line(self) -> None:
        blocker = scratch_dir(self) / "blocker"
        blocker.write_text("a file where the state directory should be")
        top = self.build(state_dir=str(blocker))
        stderr = StringIO()
        self.patch(sys, "__stderr__", stderr)
        with self.assertRaises(SystemExit) as caught:
            top.startService()
        self.assertEqual(caught.exception.code, 2)
        line = stderr.getvalue()
        self.assertTrue(
            line.startswith(
                f"dockerproxy: --state-dir: cannot keep the token signing key {blocker}/{KEY_FILE}"
            ),
            line,
        )
        self.assertEqual(line.count("\n"), 1)

    def test_without_logins_no_key_and_no_state_directory(self) -> None:
        toml = {k: v for k, v in self.toml.items() if k != "auth"}
        self.toml = toml
        top = self.build()
        self.assertNotIn("signing-key", [IService(child).name for child in top])
        top.startService()
        self.assertFalse(self.state.exists())
        assert top.client_auth is not None and not top.client_auth.enabled

    def test_an_admin_listener_beyond_loopback_admits_admins_only(self) -> None:
        top = self.build(admin={"listen": ["tcp:9100"]})
        top.startService()
        admin_site = self.reactor.tcpServers[0][1]
        self.assertIn(b"401 Unauthorized", self.get_from(admin_site, "/metrics"))
        alice = "Basic " + base64.b64encode(b"alice:pw").decode()
        self.assertIn(b"200 OK", self.get_from(admin_site, "/healthz", alice))
        wrong = "Basic " + base64.b64encode(b"alice:nope").decode()
        transport = StringTransport()
        channel = admin_site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
        channel.makeConnection(transport)
        channel.dataReceived(
            f"GET /healthz HTTP/1.1\r\nHost: a\r\nAuthorization: {wrong}\r\n\r\n".encode()
        )
        self.assertEqual(transport.value(), b"", "a failure waits for the login delay")
        self.reactor.advance(1.0)
        self.assertIn(b"401 Unauthorized", transport.value())
