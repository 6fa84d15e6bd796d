"""Clients logging in to the proxy, through the whole Site (L{dockerproxy.clientauth} and
L{dockerproxy.tokenservice}): challenges, logins, the proxy's tokens checked on every
request, anonymous pulls by pattern, failed logins and lockouts, reloads; and that no
client credential ever reaches an upstream."""

from __future__ import annotations

import jwt

from dockerproxy.clientauth import WARM_USER
from dockerproxy.config import build_config
from tests.unit.authsite import (
    CI_TOKEN,
    KEY,
    MIRROR,
    PASSWORDS,
    AuthTestCase,
    auth_config,
    auth_settings,
    basic,
)
from tests.unit.fakes import scratch_dir
from tests.unit.proxysite import AUTH_HOST, HUB_HOST, MANIFEST, parse_response

ALPINE = "/v2/library/alpine/manifests/3.20"
SECRET = "/v2/private/secret/manifests/1"
REALM = f'realm="http://{MIRROR}/v2/auth",service="dockerproxy"'
ALICE = basic("alice", PASSWORDS["alice"])


class ChallengeTests(AuthTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.use(auth_config())

    def test_the_ping_is_the_proxys_own_challenge(self) -> None:
        response = self.fetch_as("GET", "/v2/")
        self.assertRegistryError(response, 401, "UNAUTHORIZED")
        self.assertEqual(response.header("www-authenticate"), f"Bearer {REALM}")
        self.assertEqual(self.upstream.seen, [])  # the upstream is not asked
        self.assertEqual((self.last().user, self.last().refusal), (None, "auth"))

    def test_api_requests_are_challenged_with_their_scope_before_anything_upstream(self) -> None:
        for path in (ALPINE, "/v2/library/alpine/tags/list", "/v2/alpine/blobs/sha256:" + "a" * 64):
            response = self.fetch_as("GET", path)
            self.assertRegistryError(response, 401, "UNAUTHORIZED")
            name = "alpine" if "/v2/alpine/" in path else "library/alpine"
            self.assertEqual(
                response.header("www-authenticate"),
                f'Bearer {REALM},scope="repository:{name}:pull"',
            )
        self.assertEqual(self.upstream.seen, [])

    def test_containerd_gets_its_ns_back_in_the_realm(self) -> None:
        response = self.fetch_as("HEAD", f"{ALPINE}?ns=docker.io")
        self.assertEqual(response.status, 401)
        self.assertIn(
            f'realm="http://{MIRROR}/v2/auth?ns=docker.io"', response.header("www-authenticate")
        )

    def test_basic_credentials_are_not_taken_on_the_api(self) -> None:
        response = self.fetch_as("GET", ALPINE, ALICE)
        self.assertEqual(response.status, 401)
        self.assertEqual(self.upstream.seen, [])

    def test_public_url_names_the_realm(self) -> None:
        self.use(auth_config(toml={"public_url": "https://mirror.example.test"}))
        response = self.fetch_as("GET", "/v2/")
        self.assertIn(
            'realm="https://mirror.example.test/v2/auth"', response.header("www-authenticate")
        )


class LoginTests(AuthTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.use(auth_config())
        self.serve_upstream(ALPINE)

    def test_docker_login_then_pull(self) -> None:
        """docker login: ping, token with Basic and no scope, ping with the token; then a
        pull with a token for its repository."""
        response = self.login(authorization=ALICE)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("cache-control"), "no-store")
        document = response.json()
        self.assertEqual(document["token"], document["access_token"])
        self.assertEqual(document["expires_in"], 300)
        self.assertEqual(self.last().user, "alice")
        ping = self.fetch_as("GET", "/v2/", f"Bearer {document['token']}")
        self.assertEqual((ping.status, ping.body), (200, b"{}"))
        self.assertEqual(self.last().user, "alice")

        token = self.token("library/alpine", authorization=ALICE)
        pulled = self.fetch_as("GET", ALPINE, f"Bearer {token}")
        self.assertEqual((pulled.status, pulled.body), (200, MANIFEST))
        self.assertEqual((self.last().user, self.last().refusal), ("alice", None))
        self.assertEqual(self.client_credentials_upstream(), [])

    def test_the_token_carries_the_user_and_only_pull_scopes(self) -> None:
        response = self.login(
            (
                "repository:library/alpine:pull",
                "repository:library/busybox:push,pull",
                "repository:library/nginx:push",
                "repository:library/redis:*",
                "registry:catalog:*",
                "repository:Not_A_Name:pull",
            ),
            authorization=ALICE,
        )
        claims = jwt.decode(
            response.json()["token"],
            KEY,
            algorithms=["HS256"],
            audience="dockerproxy",
            options={"verify_exp": False},  # the test clock starts at 0
        )
        self.assertEqual(claims["sub"], "alice")
        self.assertEqual(
            claims["access"],
            [
                {"type": "repository", "name": "library/alpine", "actions": ["pull"]},
                {"type": "repository", "name": "library/busybox", "actions": ["pull"]},
            ],
        )

    def test_a_token_for_one_repository_does_not_open_another(self) -> None:
        token = self.token("library/alpine", authorization=ALICE)
        response = self.fetch_as("GET", "/v2/library/busybox/manifests/1", f"Bearer {token}")
        self.assertRegistryError(response, 401, "UNAUTHORIZED")
        self.assertEqual(
            response.header("www-authenticate"),
            f'Bearer {REALM},scope="repository:library/busybox:pull",error="insufficient_scope"',
        )
        self.assertEqual(self.upstream.requests_to(HUB_HOST), [])

    def test_the_name_the_client_used_is_what_the_token_covers(self) -> None:
        """A short name and its library/ form are the same upstream repository, but a
        token covers the name it was asked for, as the client will use it."""
        short = self.token("alpine", authorization=ALICE)
        self.assertEqual(
            self.fetch_as("GET", "/v2/alpine/manifests/3.20", f"Bearer {short}").status, 200
        )
        self.assertEqual(self.fetch_as("GET", ALPINE, f"Bearer {short}").status, 401)

    def test_a_tampered_token_is_refused(self) -> None:
        token = self.token("library/alpine", authorization=ALICE)
        header, payload, signature = token.split(".")
        claims = jwt.decode(token, options={"verify_signature": False})
        forged = jwt.encode({**claims, "sub": "bob"}, b"not the key" * 4, algorithm="HS256")
        for bad in (
            f"{header}.{forged.split('.')[1]}.{signature}",
            forged,
            f"{header}.{payload}.{signature[::-1]}",
        ):
            response = self.fetch_as("GET", ALPINE, f"Bearer {bad}")
            self.assertRegistryError(response, 401, "UNAUTHORIZED")
            self.assertIn('error="invalid_token"', response.header("www-authenticate"))
        self.assertEqual(self.upstream.requests_to(HUB_HOST), [])

    def test_an_expired_token_is_refused(self) -> None:
        token = self.token("library/alpine", authorization=ALICE)
        self.clock.advance(299)
        self.assertEqual(self.fetch_as("GET", ALPINE, f"Bearer {token}").status, 200)
        self.clock.advance(1)
        response = self.fetch_as("GET", ALPINE, f"Bearer {token}")
        self.assertEqual(response.status, 401)
        self.assertIn('error="invalid_token"', response.header("www-authenticate"))

    def test_a_static_token_is_a_password_and_a_bearer_token(self) -> None:
        token = self.token("library/alpine", authorization=basic("whoever", CI_TOKEN))
        self.assertEqual(jwt.decode(token, options={"verify_signature": False})["sub"], "ci")
        self.assertEqual(self.fetch_as("GET", ALPINE, f"Bearer {token}").status, 200)
        direct = self.fetch_as("GET", ALPINE, f"Bearer {CI_TOKEN}")
        self.assertEqual((direct.status, self.last().user), (200, "ci"))
        self.assertEqual(self.client_credentials_upstream(), [])

    def test_post_sends_clients_back_to_get(self) -> None:
        response = self.fetch_as("POST", "/v2/auth", ALICE)
        self.assertRegistryError(response, 404, "UNSUPPORTED")


class FailedLoginTests(AuthTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.use(auth_config())

    def test_a_wrong_password_waits_the_delay_then_gets_401(self) -> None:
        transport = self.send(
            "GET",
            "/v2/auth",
            [("Authorization", basic("alice", "wrong")), ("X-Forwarded-For", "192.0.2.1")],
        )
        self.assertEqual(transport.value(), b"")  # nothing yet: the delay runs on the clock
        self.clock.advance(1)
        response = parse_response(transport.value(), "GET")
        entry = self.assertRegistryError(response, 401, "UNAUTHORIZED")
        self.assertEqual(entry["message"], "invalid user name or password")
        self.assertEqual(response.header("www-authenticate"), 'Basic realm="dockerproxy"')
        self.assertEqual((self.last().user, self.last().refusal), (None, "login"))

    def test_unknown_users_bad_headers_and_wrong_static_tokens_are_failures_too(self) -> None:
        for authorization in (
            basic("mallory", "x"),
            "Basic !!!not-base64",
            "Basic " + "bm9jb2xvbg==",  # "nocolon"
            "Negotiate abc",
            f"Bearer {CI_TOKEN}x",
        ):
            response = self.login(authorization=authorization, advance=1)
            self.assertEqual(response.status, 401, authorization)
            self.assertEqual(self.last().refusal, "login")
        guessed = self.fetch_as("GET", ALPINE, f"Bearer {CI_TOKEN}-guess", advance=1)
        self.assertEqual((guessed.status, self.last().refusal), (401, "login"))

    def test_ten_failures_in_a_minute_lock_the_address_out_for_five_minutes(self) -> None:
        for _ in range(10):
            self.assertEqual(
                self.login(authorization=basic("alice", "guess"), advance=1).status, 401
            )
        # Locked out: even the right password, or a static token, gets a 429 at once.
        for locked in (
            self.login(authorization=ALICE),
            self.fetch_as("GET", ALPINE, f"Bearer {CI_TOKEN}"),
            self.login(),
        ):
            self.assertRegistryError(locked, 429, "TOOMANYREQUESTS")
            self.assertEqual(self.last().refusal, "lockout")
        retry = int(self.login(authorization=ALICE).header("retry-after"))
        self.assertTrue(280 <= retry <= 300, retry)
        # Another address is not locked out.
        self.assertEqual(self.login(authorization=ALICE, client="192.0.2.99").status, 200)
        self.clock.advance(retry)
        self.assertEqual(self.login(authorization=ALICE).status, 200)

    def test_a_token_already_issued_keeps_working_from_a_locked_out_address(self) -> None:
        self.serve_upstream(ALPINE)
        token = self.token("library/alpine", authorization=ALICE)
        for _ in range(10):
            self.login(authorization=basic("alice", "guess"), advance=1)
        self.assertEqual(self.fetch_as("GET", ALPINE, f"Bearer {token}").status, 200)

    def test_no_password_or_token_is_logged(self) -> None:
        self.serve_upstream(ALPINE)
        token = self.token("library/alpine", authorization=ALICE)
        self.fetch_as("GET", ALPINE, f"Bearer {token}")
        self.login(authorization=basic("alice", "my-wrong-password"), advance=1)
        self.login(authorization=basic("my-password-typed-as-user", "x"), advance=1)
        self.fetch_as("GET", ALPINE, f"Bearer {CI_TOKEN}")
        self.fetch_as("GET", ALPINE, f"Bearer {CI_TOKEN}zz", advance=1)
        self.fetch_as("GET", ALPINE, f"Bearer {token[:-3]}abc")
        text = self.log_text()
        self.assertIn("failed login from 192.0.2.10", text)
        for secret in (
            PASSWORDS["alice"],
            "my-wrong-password",
            "my-password-typed-as-user",
            CI_TOKEN,
            token.split(".")[2],
            ALICE.split()[1],
            "upstream-token-of-the-proxy",
        ):
            self.assertNotIn(secret, text)
        self.assertNotIn(CI_TOKEN, repr(self.client_auth))


class AnonymousTests(AuthTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.use(auth_config(auth_settings(anonymous=("docker.io/library/*",))))
        self.serve_upstream(ALPINE)
        self.serve_upstream(SECRET)

    def test_anonymous_clients_get_tokens_for_matching_repositories_only(self) -> None:
        for authorization in (None, "Basic Og=="):  # no credentials; skopeo's empty ones
            token = self.token("library/alpine", "private/secret", authorization=authorization)
            claims = jwt.decode(token, options={"verify_signature": False})
            self.assertEqual(claims["sub"], "")
            self.assertEqual([a["name"] for a in claims["access"]], ["library/alpine"])
            pulled = self.fetch_as("GET", ALPINE, f"Bearer {token}")
            self.assertEqual((pulled.status, pulled.body, self.last().user), (200, MANIFEST, None))
            refused = self.fetch_as("GET", SECRET, f"Bearer {token}")
            self.assertEqual((refused.status, self.last().refusal), (401, "auth"))
            self.assertIn('error="insufficient_scope"', refused.header("www-authenticate"))

    def test_short_names_match_by_the_upstream_repository(self) -> None:
        """The pattern matches NAME/REPOSITORY upstream: alpine is docker.io/library/alpine."""
        token = self.token("alpine")
        self.assertEqual(
            jwt.decode(token, options={"verify_signature": False})["access"][0]["name"], "alpine"
        )

    def test_users_may_pull_what_anonymous_clients_may_not(self) -> None:
        token = self.token("private/secret", authorization=ALICE)
        self.assertEqual(self.fetch_as("GET", SECRET, f"Bearer {token}").status, 200)

    def test_a_reload_takes_effect_on_tokens_already_issued(self) -> None:
        anonymous = self.token("library/alpine")
        bob = self.token("library/alpine", authorization=basic("bob", PASSWORDS["bob"]))
        alice = self.token("library/alpine", authorization=ALICE)
        users = {k: v for k, v in auth_settings().users.items() if k == "alice"}
        self.client_auth.apply(auth_config(auth_settings(users=users)))
        self.assertEqual(self.fetch_as("GET", ALPINE, f"Bearer {anonymous}").status, 401)
        refused = self.fetch_as("GET", ALPINE, f"Bearer {bob}")
        self.assertIn('error="invalid_token"', refused.header("www-authenticate"))
        self.assertEqual(self.fetch_as("GET", ALPINE, f"Bearer {alice}").status, 200)
        self.assertEqual(
            self.login(authorization=basic("bob", PASSWORDS["bob"]), advance=1).status, 401
        )

    def test_turning_logins_off_takes_a_restart(self) -> None:
        self.client_auth.apply(build_config({}, {}))
        self.assertEqual(self.fetch_as("GET", SECRET).status, 401)
        self.assertIn("takes a restart", self.log_text())


class UpstreamIdentityTests(AuthTestCase):
    """The proxy meets upstreams as itself: client credentials never go upstream."""

    def setUp(self) -> None:
        super().setUp()
        self.serve_upstream(ALPINE)

    def test_the_proxys_upstream_token_is_fetched_once_per_scope_and_kept(self) -> None:
        self.use(auth_config())
        token = self.token("library/alpine", authorization=ALICE)
        for _ in range(3):
            self.assertEqual(self.fetch_as("GET", ALPINE, f"Bearer {token}").status, 200)
        [realm] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual(realm.query["scope"], ["repository:library/alpine:pull"])
        self.assertIsNone(realm.header("authorization"))  # anonymous upstream
        hub = self.upstream.requests_to(HUB_HOST)
        self.assertEqual(
            [s.header("authorization") for s in hub],
            [None, "Bearer upstream-token-of-the-proxy"]
            + ["Bearer upstream-token-of-the-proxy"] * 2,
        )

    def test_the_registrys_configured_credentials_are_the_proxys(self) -> None:
        self.use(
            auth_config(
                toml={
                    "registries": {
                        "docker.io": {
                            "url": "https://registry-1.docker.io",
                            "username": "bot",
                            "password": "bot-pw",
                        }
                    }
                }
            )
        )
        token = self.token("library/alpine", authorization=ALICE)
        self.assertEqual(self.fetch_as("GET", ALPINE, f"Bearer {token}").status, 200)
        [realm] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual(realm.header("authorization"), basic("bot", "bot-pw"))
        self.assertEqual(self.client_credentials_upstream(), [basic("bot", "bot-pw")])


class CacheTests(AuthTestCase):
    """With the mirror: what the proxy fetched as itself is served from the cache to the
    users it lets through, and to nobody else."""

    def setUp(self) -> None:
        super().setUp()
        self.use(
            auth_config(auth_settings(anonymous=("docker.io/library/*",))),
            cache_dir=str(scratch_dir(self)),
        )
        self.serve_upstream(SECRET)

    def test_a_private_repository_is_cached_for_users_only(self) -> None:
        alice = self.token("private/secret", authorization=ALICE)
        self.assertEqual(self.fetch_as("GET", SECRET, f"Bearer {alice}").body, MANIFEST)
        bob = self.token("private/secret", authorization=basic("bob", PASSWORDS["bob"]))
        hit = self.fetch_as("GET", SECRET, f"Bearer {bob}")
        self.assertEqual((hit.status, hit.body), (200, MANIFEST))
        self.assertEqual(self.requests[-1].cache, "hit")
        anonymous = self.token("private/secret")
        self.assertEqual(self.fetch_as("GET", SECRET, f"Bearer {anonymous}").status, 401)
        self.assertEqual(self.fetch_as("GET", SECRET).status, 401)
        manifests = [s for s in self.upstream.requests_to(HUB_HOST) if s.path == SECRET]
        self.assertEqual(
            [s.header("authorization") for s in manifests],
            [None, "Bearer upstream-token-of-the-proxy"],
        )


class WarmTokenTests(AuthTestCase):
    """The [[warm]] refresh pulls as the proxy itself, with a token it signs: no user."""

    def setUp(self) -> None:
        super().setUp()
        self.use(auth_config())
        self.serve_upstream(ALPINE)

    def test_the_proxys_own_token_pulls_its_repository_only(self) -> None:
        token = self.client_auth.warm_token("library/alpine")
        assert token is not None
        response = self.fetch_as("GET", ALPINE, f"Bearer {token}")
        self.assertEqual((response.status, self.last().user), (200, WARM_USER))
        other = self.fetch_as("GET", SECRET, f"Bearer {token}")
        self.assertEqual(other.status, 401)
        self.assertIn('error="insufficient_scope"', other.header("www-authenticate"))
        self.assertEqual(self.client_credentials_upstream(), [])

    def test_no_token_before_the_signing_key_is_loaded(self) -> None:
        self.client_auth.signer = None
        self.assertIsNone(self.client_auth.warm_token("library/alpine"))
