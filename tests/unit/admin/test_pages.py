"""The admin Site (L{dockerproxy.admin.pages}) over raw HTTP: each page, and Basic auth
of admins on a listener beyond loopback, with a fake C{check_admin}."""

from __future__ import annotations

import base64

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.admin.gate import REMEMBER_ADMIN, basic_credentials
from dockerproxy.admin.health import ReadinessCheck
from dockerproxy.admin.history import History
from dockerproxy.admin.metrics import Metrics
from dockerproxy.admin.pages import AdminRoot, AdminSite
from dockerproxy.admin.status import StatusSources
from dockerproxy.channel import MAX_BODY
from tests.unit.proxysite import Response, parse_response

PASSWORD = "s3cret-admin-pw"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class AdminSiteTestCase(SynchronousTestCase):
    check_admin = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.metrics = Metrics(self.clock)
        self.draining = False
        readiness = ReadinessCheck(
            self.clock, lambda: self.draining, lambda: self.metrics.reached_at, None
        )
        sources = StatusSources(self.clock, History(), self.metrics)
        root = AdminRoot(self.metrics, readiness, sources, self.check_admin)
        self.site = AdminSite(root, self.clock)

    def get(self, path: str, *headers: str, method: str = "GET") -> Response:
        return parse_response(self.send(path, *headers, method=method).value(), method)

    def send(self, path: str, *headers: str, method: str = "GET") -> StringTransport:
        transport = StringTransport()
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(transport)
        lines = [f"{method} {path} HTTP/1.1", "Host: admin.test", *headers]
        self.channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        return transport


class PageTests(AdminSiteTestCase):
    def test_healthz(self) -> None:
        response = self.get("/healthz")
        self.assertEqual((response.status, response.body), (200, b"ok\n"))
        self.assertEqual(self.get("/healthz", method="HEAD").status, 200)

    def test_metrics_in_prometheus_text(self) -> None:
        self.metrics.observe(
            {
                "route": "blob",
                "method": "GET",
                "status": 200,
                "bytes": 5,
                "duration": 0.1,
                "cache": "hit",
            }
        )
        response = self.get("/metrics")
        self.assertEqual(response.status, 200)
        self.assertEqual(
            response.header("content-type"), "text/plain; version=0.0.4; charset=utf-8"
        )
        self.assertIn(
            b'dockerproxy_requests_total{method="GET",route="blob",status="200"} 1.0', response.body
        )
        self.assertIn(
            b'dockerproxy_cache_requests_total{kind="blob",result="hit"} 1.0', response.body
        )
        self.assertIn(b"process_resident_memory_bytes", response.body)

    def test_readyz_names_each_check(self) -> None:
        response = self.get("/readyz")
        self.assertEqual(response.status, 503)
        document = response.json()
        self.assertFalse(document["ready"])
        self.assertEqual(document["checks"]["draining"], "ok")
        self.assertIn("no upstream answered", document["checks"]["upstream"])
        self.metrics.reached_at = self.clock.seconds()
        self.assertEqual(
            self.get("/readyz").json(),
            {"ready": True, "checks": {"draining": "ok", "cache": "ok", "upstream": "ok"}},
        )
        self.draining = True
        self.assertEqual(self.get("/readyz").status, 503)

    def test_status_json_and_page(self) -> None:
        document = self.get("/status.json").json()
        self.assertEqual(len(document["minutes"]["requests"]), 1440)
        self.assertIsNone(document["cache"])
        page = self.get("/status", "Accept-Language: zh-CN,zh;q=0.9")
        self.assertEqual(page.status, 200)
        self.assertEqual(page.header("content-language"), "zh")
        self.assertIn("镜像状态".encode(), page.body)
        self.assertIn(b"<svg", page.body)
        self.assertNotIn(b"<script", page.body)
        self.assertIn(b'lang="en"', self.get("/status?lang=en").body)

    def test_unknown_paths_and_methods(self) -> None:
        self.assertEqual(self.get("/").status, 404)
        self.assertEqual(self.get("/metrics/x").status, 404)
        self.assertEqual(self.get("/v2/").status, 404)
        response = self.get("/metrics", method="DELETE")
        self.assertEqual((response.status, response.header("allow")), (405, "GET, HEAD"))

    def test_bodies_are_bounded_as_on_the_proxys_port(self) -> None:
        transport = StringTransport()
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(
            f"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))


class AuthTests(AdminSiteTestCase):
    def setUp(self) -> None:
        self.checked: list[tuple[str, str]] = []

        self.pending: Deferred[bool] | None = None

        async def check_admin(client: str, user: str, password: str) -> bool:
            self.checked.append((user, password))
            if self.pending is not None:
                return await self.pending
            return (user, password) == ("ops", PASSWORD)

        self.check_admin = check_admin
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        super().setUp()

    def test_no_credentials_get_a_challenge(self) -> None:
        for path in ("/metrics", "/status", "/healthz", "/nope"):
            response = self.get(path)
            self.assertEqual(response.status, 401, path)
            self.assertEqual(
                response.header("www-authenticate"),
                'Basic realm="dockerproxy admin", charset="UTF-8"',
            )
            self.assertNotIn(b"dockerproxy_", response.body)

    def test_an_admin_is_let_in(self) -> None:
        response = self.get("/metrics", f"Authorization: {basic('ops', PASSWORD)}")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.checked, [("ops", PASSWORD)])

    def test_credentials_that_passed_are_checked_again_after_a_minute(self) -> None:
        for _ in range(3):
            self.assertEqual(
                self.get("/metrics", f"Authorization: {basic('ops', PASSWORD)}").status, 200
            )
        self.assertEqual(len(self.checked), 1, "a slow bcrypt check once, not per scrape")
        self.assertEqual(self.get("/metrics", f"Authorization: {basic('ops', 'x')}").status, 401)
        self.clock.advance(REMEMBER_ADMIN)
        self.get("/metrics", f"Authorization: {basic('ops', PASSWORD)}")
        self.assertEqual(len(self.checked), 3)

    def test_a_wrong_password_is_refused_and_logged_without_it(self) -> None:
        response = self.get("/status.json", f"Authorization: {basic('ops', 'guess')}")
        self.assertEqual(response.status, 401)
        logged = " ".join(formatEvent(e) for e in self.events)
        self.assertIn("admin: refused credentials of 'ops'", logged)
        self.assertNotIn("guess", logged)
        self.assertEqual(
            self.get("/status.json", f"Authorization: {basic('root', PASSWORD)}").status, 401
        )

    def test_the_answer_waits_for_the_check_without_holding_the_reactor(self) -> None:
        """bcrypt runs on the thread pool: the page is rendered when the check answers."""
        self.pending = Deferred()
        transport = self.send("/healthz", f"Authorization: {basic('ops', 'pw')}")
        self.assertEqual(transport.value(), b"")
        self.pending.callback(True)
        response = parse_response(transport.value(), "GET")
        self.assertEqual((response.status, response.body), (200, b"ok\n"))

    def test_a_client_gone_before_the_check_answers_gets_nothing(self) -> None:
        self.pending = Deferred()
        transport = self.send("/metrics", f"Authorization: {basic('ops', 'pw')}")
        self.channel.connectionLost(Failure(ConnectionDone("gone")))
        self.pending.callback(True)
        self.assertEqual(transport.value(), b"")

    def test_two_authorization_headers_are_no_credential(self) -> None:
        good = f"Authorization: {basic('ops', PASSWORD)}"
        response = self.get("/metrics", good, "Authorization: Basic Og==")
        self.assertEqual(response.status, 401)
        self.assertEqual(self.checked, [])

    def test_a_bearer_token_or_garbage_is_no_credential(self) -> None:
        self.assertEqual(self.get("/metrics", "Authorization: Bearer abc").status, 401)
        self.assertEqual(self.get("/metrics", "Authorization: Basic %%%").status, 401)
        self.assertEqual(self.checked, [])


def test_basic_credentials() -> None:
    assert basic_credentials(basic("a", "b:c").encode()) == ("a", "b:c")
    assert basic_credentials(b"basic " + base64.b64encode(b"a:")) == ("a", "")
    assert basic_credentials(b"Basic " + base64.b64encode(b":pw")) is None
    assert basic_credentials(b"Basic " + base64.b64encode(b"nocolon")) is None
    assert basic_credentials(b"Basic " + base64.b64encode(b"\xff:x")) is None
    assert basic_credentials(None) is None
