"""C{/v2/} through the whole Site (L{dockerproxy.resources.V2Resource}): the upstream's
challenge pointed at the proxy's own C{/v2/auth}, with the client's scope and the Host
the client used (see proxysite for the harness)."""

from __future__ import annotations

from tests.unit.proxysite import (
    HUB_CHALLENGE,
    HUB_HOST,
    MIRROR,
    SERVICE,
    UNAUTHORIZED,
    ProxyTestCase,
    reply,
)


class PingTests(ProxyTestCase):
    def test_challenge_points_at_the_proxy(self) -> None:
        response = self.fetch("GET", "/v2/")
        self.assertEqual(response.status, 401)
        self.assertEqual(
            response.header("www-authenticate"),
            f'Bearer realm="http://{MIRROR}/v2/auth",service="{SERVICE}"',
        )

    def test_challenge_uses_the_host_header(self) -> None:
        response = self.fetch("GET", "/v2/", host="Other.Example")
        self.assertEqual(
            response.header("www-authenticate"),
            f'Bearer realm="http://other.example/v2/auth",service="{SERVICE}"',
        )

    def test_upstream_body_is_kept(self) -> None:
        response = self.fetch("GET", "/v2/")
        self.assertEqual(response.body, UNAUTHORIZED)
        self.assertEqual(response.header("content-type"), "application/json")

    def test_upstream_is_asked_for_v2(self) -> None:
        self.fetch("GET", "/v2/")
        [seen] = self.upstream.seen
        self.assertEqual((seen.method, seen.host, seen.path), ("GET", HUB_HOST, "/v2/"))

    def test_v2_without_slash(self) -> None:
        self.assertEqual(self.fetch("GET", "/v2").status, 401)

    def test_ping_without_auth(self) -> None:
        self.upstream.on(
            HUB_HOST, "/v2/", reply(200, b"{}", docker_distribution_api_version="registry/2.0")
        )
        response = self.fetch("GET", "/v2/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"{}")
        self.assertEqual(response.header("docker-distribution-api-version"), "registry/2.0")
        self.assertIsNone(response.header("www-authenticate"))

    def test_basic_challenge_is_relayed_as_is(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", reply(401, b"", www_authenticate='Basic realm="r"'))
        self.assertEqual(self.fetch("GET", "/v2/").header("www-authenticate"), 'Basic realm="r"')

    def test_manifest_head_challenge_has_the_client_scope(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/library/busybox/manifests/latest",
            reply(
                401,
                UNAUTHORIZED,
                www_authenticate=HUB_CHALLENGE + ',scope="repository:library/busybox:pull"',
            ),
        )
        response = self.fetch("HEAD", "/v2/busybox/manifests/latest")
        self.assertEqual(response.status, 401)
        self.assertEqual(
            response.header("www-authenticate"),
            f'Bearer realm="http://{MIRROR}/v2/auth",service="{SERVICE}",'
            'scope="repository:busybox:pull"',
        )
        self.assertEqual(self.upstream.seen[-1].method, "HEAD")

    def test_challenge_error_is_kept(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/library/busybox/manifests/latest",
            reply(
                401, UNAUTHORIZED, www_authenticate=HUB_CHALLENGE + ',error="insufficient_scope"'
            ),
        )
        value = self.fetch("GET", "/v2/busybox/manifests/latest").header("www-authenticate")
        self.assertIn('error="insufficient_scope"', value or "")
        self.assertIn('scope="repository:busybox:pull"', value or "")
