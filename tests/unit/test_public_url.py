"""C{--public-url} (L{dockerproxy.exchange.base_url}): challenges and the home page name it,
whatever Host a request carries."""

from __future__ import annotations

from dockerproxy.config import DOCKER_HUB_URL, build_config
from tests.unit.proxysite import (
    HUB_CHALLENGE,
    HUB_HOST,
    SERVICE,
    UNAUTHORIZED,
    ProxyTestCase,
    reply,
)


class PublicURLTests(ProxyTestCase):
    """With --public-url, no Host header can point a client's credentials elsewhere."""

    def setUp(self) -> None:
        super().setUp()
        self.use(build_config({"public_url": "https://mirror.test"}, {}))

    def test_ping_challenge_names_the_public_url(self) -> None:
        response = self.fetch("GET", "/v2/", host="evil.test")
        self.assertEqual(
            response.header("www-authenticate"),
            f'Bearer realm="https://mirror.test/v2/auth",service="{SERVICE}"',
        )

    def test_rewritten_challenges_name_the_public_url(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/library/busybox/manifests/latest",
            reply(401, UNAUTHORIZED, www_authenticate=HUB_CHALLENGE),
        )
        value = self.fetch(
            "HEAD", "/v2/busybox/manifests/latest?ns=docker.io", host="evil.test"
        ).header("www-authenticate")
        self.assertIn('realm="https://mirror.test/v2/auth?ns=docker.io"', value or "")

    def test_local_challenge_names_the_public_url(self) -> None:
        self.use(
            build_config(
                {
                    "routes": {"hub.mirror.test": DOCKER_HUB_URL},
                    "public_url": "http://mirror.test:5000",
                },
                {},
            )
        )
        response = self.fetch("GET", "/v2/", host="evil.test")
        self.assertEqual(
            response.header("www-authenticate"),
            'Bearer realm="http://mirror.test:5000/v2/auth",service="dockerproxy"',
        )

    def test_home_page_shows_the_public_url(self) -> None:
        response = self.fetch("GET", "/", host="evil.test")
        self.assertIn(b"mirror.test", response.body)
        self.assertIn(b"https://mirror.test", response.body)
        self.assertNotIn(b"evil.test", response.body)
