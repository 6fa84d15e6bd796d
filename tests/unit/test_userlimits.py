"""Limits count per user once clients log in (L{dockerproxy.clientauth.ClientAuth.identify}
at the Site, before L{dockerproxy.policy.Policy.admit}): a user's bearer token names it,
whatever address it comes from; a login or an anonymous request counts for its address."""

from __future__ import annotations

from dockerproxy.users import MAX_CHECKS, MAX_WAITING
from tests.unit.authsite import CI_TOKEN, PASSWORDS, AuthTestCase, auth_config, basic

ALPINE = "/v2/library/alpine/manifests/3.20"
ALICE = basic("alice", PASSWORDS["alice"])
HOME = "192.0.2.10"


class PerUserRateTests(AuthTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.use(auth_config(toml={"limits": {"rate_limit": "1/m", "rate_burst": 3}}))
        self.serve_upstream(ALPINE)
        self.alice = f"Bearer {self.token('library/alpine', authorization=ALICE)}"

    def pull(self, authorization: str | None, client: str = HOME) -> int:
        return self.fetch_as("GET", ALPINE, authorization, client=client).status

    def test_a_user_spends_its_own_bucket_not_its_address(self) -> None:
        self.assertEqual([self.pull(self.alice) for _ in range(4)], [200, 200, 200, 429])
        self.assertEqual((self.last().user, self.last().refusal), ("alice", "rate"))
        # The address spent one request (the login): the others are still there.
        self.assertEqual(self.fetch_as("GET", "/", client=HOME).status, 200)
        self.assertEqual(self.pull(f"Bearer {CI_TOKEN}"), 200)
        self.assertEqual(self.last().user, "ci")

    def test_a_user_is_one_client_wherever_it_comes_from(self) -> None:
        statuses = [self.pull(self.alice, client=f"198.51.100.{n}") for n in range(4)]
        self.assertEqual(statuses, [200, 200, 200, 429])

    def test_an_invalid_token_counts_for_its_address(self) -> None:
        forged = self.alice[:-4] + "AAAA"
        statuses = [self.fetch_as("GET", "/", forged, client=HOME).status for _ in range(3)]
        self.assertEqual(statuses, [200, 200, 429])
        self.assertIsNone(self.last().user)
        self.assertEqual(self.pull(self.alice), 200)


class NoLimitsTests(AuthTestCase):
    def test_without_limits_the_token_is_verified_once_by_the_resource(self) -> None:
        self.use(auth_config())
        self.serve_upstream(ALPINE)
        alice = f"Bearer {self.token('library/alpine', authorization=ALICE)}"
        assert self.client_auth.signer is not None
        verified: list[str] = []
        verify = self.client_auth.signer.verify
        self.patch(self.client_auth.signer, "verify", lambda t: verified.append(t) or verify(t))
        self.assertEqual(self.fetch_as("GET", ALPINE, alice).status, 200)
        self.assertEqual((len(verified), self.last().user), (1, "alice"))


class LoginFloodTests(AuthTestCase):
    def test_logins_beyond_the_waiting_checks_get_a_429_at_once(self) -> None:
        """A flood of Basic logins is refused while too many bcrypt checks wait, so it
        cannot make every other login wait behind it."""
        self.use(auth_config())
        checks = self.client_auth.users._checks  # the store's semaphore, filled up here
        held = [checks.acquire() for _ in range(MAX_CHECKS + MAX_WAITING)]
        response = self.login(("repository:library/alpine:pull",), authorization=ALICE)
        self.assertRegistryError(response, 429, "TOOMANYREQUESTS")
        self.assertEqual(response.header("retry-after"), "1")
        self.assertEqual(self.last().refusal, "busy")
        for acquired in held:
            acquired.addCallback(lambda token: token.release())
        self.assertEqual(self.login(authorization=ALICE).status, 200)
