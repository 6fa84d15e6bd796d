"""C{/v2/auth} (L{dockerproxy.resources.AuthResource}): token requests forwarded to the
upstream's realm with upstream scopes, and the upstream's challenge fetched once and
remembered (L{dockerproxy.challenges.ChallengeCache})."""

from __future__ import annotations

from tests.unit.proxysite import (
    AUTH_HOST,
    HUB_CHALLENGE,
    HUB_HOST,
    SERVICE,
    UNAUTHORIZED,
    ProxyTestCase,
    Seen,
    reply,
)


class TokenTests(ProxyTestCase):
    def token_request(self) -> Seen:
        [seen] = self.upstream.requests_to(AUTH_HOST)
        return seen

    def test_token_request_goes_to_the_upstream_realm(self) -> None:
        response = self.fetch("GET", "/v2/auth?service=mirror&scope=repository:busybox:pull")
        self.assertEqual(response.status, 200)
        seen = self.token_request()
        self.assertEqual(seen.path, "/token")
        self.assertEqual(seen.query["service"], [SERVICE])
        self.assertEqual(seen.query["scope"], ["repository:library/busybox:pull"])

    def test_token_response_is_relayed(self) -> None:
        response = self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        self.assertEqual(
            response.json(), {"token": "tok", "scope": ["repository:library/busybox:pull"]}
        )
        self.assertEqual(response.header("content-type"), "application/json")
        self.assertEqual(response.header("cache-control"), "no-store")

    def test_every_scope_is_forwarded(self) -> None:
        self.fetch(
            "GET",
            "/v2/auth?scope=repository:busybox:pull"
            "&scope=repository:bitnami/redis:pull+repository:alpine:pull"
            "&scope=registry:catalog:*",
        )
        self.assertEqual(
            self.token_request().query["scope"],
            [
                "repository:library/busybox:pull",
                "repository:bitnami/redis:pull",
                "repository:library/alpine:pull",
                "registry:catalog:*",
            ],
        )

    def test_a_failing_challenge_lookup_is_not_remembered(self) -> None:
        """A 503 from the upstream's /v2/ says nothing about its auth: ask again next time."""
        self.upstream.on(HUB_HOST, "/v2/", reply(503, b"down"))
        failed = self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        self.assertRegistryError(failed, 502, "UNAVAILABLE")
        self.upstream.on(HUB_HOST, "/v2/", reply(401, UNAUTHORIZED, www_authenticate=HUB_CHALLENGE))
        self.assertEqual(self.fetch("GET", "/v2/auth?scope=repository:busybox:pull").status, 200)

    def test_passthrough_parameters(self) -> None:
        self.fetch("GET", "/v2/auth?account=me&client_id=docker&offline_token=true&evil=1")
        query = self.token_request().query
        self.assertEqual(query["account"], ["me"])
        self.assertEqual(query["client_id"], ["docker"])
        self.assertEqual(query["offline_token"], ["true"])
        self.assertNotIn("evil", query)

    def test_basic_authorization_is_forwarded(self) -> None:
        self.fetch(
            "GET",
            "/v2/auth?scope=repository:busybox:pull",
            [("Authorization", "Basic dXNlcjpwYXNz")],
        )
        self.assertEqual(self.token_request().header("authorization"), "Basic dXNlcjpwYXNz")

    def test_anonymous_authorization_is_not_forwarded(self) -> None:
        self.fetch(
            "GET", "/v2/auth?scope=repository:busybox:pull", [("Authorization", "Basic Og==")]
        )
        self.assertIsNone(self.token_request().header("authorization"))

    def test_cookies_are_not_forwarded(self) -> None:
        self.fetch("GET", "/v2/auth", [("Cookie", "session=secret")])
        self.assertIsNone(self.token_request().header("cookie"))

    def test_challenge_is_fetched_once(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        self.fetch("GET", "/v2/auth?scope=repository:b:pull")
        self.assertEqual(len(self.upstream.requests_to(HUB_HOST)), 1)
        self.assertEqual(len(self.upstream.requests_to(AUTH_HOST)), 2)

    def test_challenge_seen_by_ping_is_reused(self) -> None:
        self.fetch("GET", "/v2/")
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        self.assertEqual([s.path for s in self.upstream.requests_to(HUB_HOST)], ["/v2/"])

    def test_challenge_is_fetched_again_after_its_ttl(self) -> None:
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        self.clock.advance(self.proxy.challenges.ttl + 1)
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        self.assertEqual(len(self.upstream.requests_to(HUB_HOST)), 2)

    def test_head_token_request(self) -> None:
        response = self.fetch("HEAD", "/v2/auth?scope=repository:a:pull")
        self.assertEqual(response.status, 200)
        self.assertTrue(response.raw.endswith(b"\r\n\r\n"))

    def test_realm_with_a_query(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/",
            reply(
                401, www_authenticate=f'Bearer realm="https://{AUTH_HOST}/token?x=1",service="s"'
            ),
        )
        self.fetch("GET", "/v2/auth?scope=repository:a:pull")
        query = self.token_request().query
        self.assertEqual(query["x"], ["1"])
        self.assertEqual(query["service"], ["s"])

    def test_token_errors_are_relayed(self) -> None:
        self.upstream.on(
            AUTH_HOST,
            "/token",
            reply(401, b'{"details":"bad credentials"}', content_type="application/json"),
        )
        response = self.fetch("GET", "/v2/auth", [("Authorization", "Basic eDp5")])
        self.assertEqual(response.status, 401)
        self.assertEqual(response.json(), {"details": "bad credentials"})

    def test_upstream_without_token_auth_gets_a_token_never_forwarded(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", reply(200, b"{}"))
        response = self.fetch("GET", "/v2/auth?scope=repository:busybox:pull")
        self.assertEqual(response.status, 200)
        token = response.json()["token"]
        self.assertEqual(self.upstream.requests_to(AUTH_HOST), [])
        self.upstream.on(HUB_HOST, "/v2/library/busybox/manifests/1", reply(200, b"{}"))
        self.fetch("GET", "/v2/busybox/manifests/1", [("Authorization", f"Bearer {token}")])
        self.assertIsNone(self.upstream.seen[-1].header("authorization"))

    def test_post_is_a_json_404(self) -> None:
        response = self.fetch("POST", "/v2/auth")
        self.assertRegistryError(response, 404, "UNSUPPORTED")
        self.assertEqual(self.upstream.seen, [])

    def test_put_is_a_json_error(self) -> None:
        response = self.fetch("PUT", "/v2/auth")
        self.assertRegistryError(response, 405, "UNSUPPORTED")
