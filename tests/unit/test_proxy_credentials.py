"""The proxy's own upstream account (a registry's C{username} and C{password}): used for
token requests and Basic upstreams only for clients that send no credentials."""

from __future__ import annotations

from twisted.web.server import Request

from dockerproxy.config import DOCKER_HUB_URL, build_config
from tests.unit.proxysite import AUTH_HOST, HUB_HOST, MANIFEST, UNAUTHORIZED, ProxyTestCase


class ProxyCredentialsTests(ProxyTestCase):
    """The proxy's own upstream account: used only for clients that send no credentials."""

    PATH = "/v2/library/busybox/manifests/1"
    BOT = "Basic Ym90OnB3"  # bot:pw

    def setUp(self) -> None:
        super().setUp()
        self.use(
            build_config(
                {
                    "registries": {
                        "docker.io": {"url": DOCKER_HUB_URL, "username": "bot", "password": "pw"}
                    }
                },
                {},
            )
        )

    def basic_upstream(self) -> None:
        def handle(request: Request) -> bytes:
            if request.getHeader(b"authorization") == self.BOT.encode():
                return MANIFEST
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Basic realm="registry"')
            return UNAUTHORIZED

        self.upstream.on(HUB_HOST, self.PATH, handle)

    def test_token_requests_carry_the_proxy_account_for_anonymous_clients(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        [seen] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual(seen.header("authorization"), self.BOT)

    def test_a_clients_own_credentials_win(self) -> None:
        self.fetch(
            "GET",
            "/v2/auth?scope=repository:busybox:pull",
            [("Authorization", "Basic dXNlcjpzZWNyZXQ=")],
        )
        [seen] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual(seen.header("authorization"), "Basic dXNlcjpzZWNyZXQ=")

    def test_basic_upstreams_get_the_account_for_anonymous_clients(self) -> None:
        self.basic_upstream()
        response = self.fetch("GET", "/v2/busybox/manifests/1")
        self.assertEqual((response.status, response.body), (200, MANIFEST))
        self.assertEqual(
            [s.header("authorization") for s in self.upstream.seen if s.path == self.PATH],
            [None, self.BOT],
        )

    def test_basic_upstreams_never_get_the_account_for_clients_with_credentials(self) -> None:
        self.basic_upstream()
        response = self.fetch(
            "GET", "/v2/busybox/manifests/1", [("Authorization", "Basic dXNlcjpzZWNyZXQ=")]
        )
        self.assertEqual(response.status, 401)
        self.assertNotIn(self.BOT, [s.header("authorization") for s in self.upstream.seen])

    def test_credentials_are_never_in_reprs(self) -> None:
        self.assertNotIn("pw", repr(self.proxy.router.registries["docker.io"]))
