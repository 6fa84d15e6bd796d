"""The user store (L{dockerproxy.users}): bcrypt checks off the reactor and bounded, static
tokens as the password of any user, remembered successes, reloads and admins."""

from __future__ import annotations

from dataclasses import replace

import bcrypt
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.config import AuthSettings, Config
from dockerproxy.users import MAX_CHECKS, MAX_WAITING, REMEMBER, TooManyChecks, UserStore
from tests.unit.fakes import ManualPool

TOKEN = "ci-token-0123456789abcdef"


def settings(**users: str) -> AuthSettings:
    return AuthSettings(
        htpasswd="/etc/dockerproxy/htpasswd",
        users={name: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)) for name, pw in users.items()},
        static_tokens={"ci": TOKEN},
        admins=("alice", "ci"),
    )


class UserStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = ManualPool()
        self.store = UserStore(settings(alice="secret", bob="hunter2"), self.pool, self.clock)

    def check(self, user: str, password: str) -> Deferred[str | None]:
        return Deferred.fromCoroutine(self.store.check_password(user, password.encode()))

    def checked(self, user: str, password: str) -> str | None:
        d = self.check(user, password)
        self.pool.complete_all()
        return self.successResultOf(d)

    def test_passwords_are_checked_with_bcrypt_on_the_pool(self) -> None:
        d = self.check("alice", "secret")
        self.assertNoResult(d)  # nothing ran in the caller (the reactor) meanwhile
        self.assertEqual(self.pool.names(), ["_checkpw"])
        self.pool.complete()
        self.assertEqual(self.successResultOf(d), "alice")
        self.assertIsNone(self.checked("alice", "wrong"))
        self.assertIsNone(self.checked("bob", "secret"))

    def test_an_unknown_user_costs_a_bcrypt_too(self) -> None:
        # Checked against alice's hash, whose password this is: still no login.
        d = self.check("mallory", "secret")
        self.assertEqual(self.pool.names(), ["_checkpw"])
        self.pool.complete()
        self.assertIsNone(self.successResultOf(d))

    def test_a_static_token_is_the_password_of_any_user_name(self) -> None:
        for user in ("ci", "alice", "anything", ""):
            self.assertEqual(self.successResultOf(self.check(user, TOKEN)), "ci")
        self.assertEqual(self.pool.calls, [])  # no bcrypt for tokens
        self.assertEqual(self.store.token_user(TOKEN.encode()), "ci")
        self.assertIsNone(self.store.token_user(TOKEN.encode()[:-1]))

    def test_at_most_two_bcrypt_checks_run_at_once(self) -> None:
        waiting = [self.check("alice", f"guess{n}") for n in range(5)]
        self.assertEqual(len(self.pool.calls), MAX_CHECKS)
        self.pool.complete()
        self.assertEqual(len(self.pool.calls), MAX_CHECKS)
        self.pool.complete_all()
        self.assertEqual([self.successResultOf(d) for d in waiting], [None] * 5)

    def test_beyond_the_waiting_checks_a_login_is_refused_at_once(self) -> None:
        waiting = [self.check("alice", f"guess{n}") for n in range(MAX_CHECKS + MAX_WAITING)]
        self.failureResultOf(self.check("alice", "secret"), TooManyChecks)
        self.assertEqual(len(self.pool.calls), MAX_CHECKS)
        self.pool.complete_all()
        self.assertEqual({self.successResultOf(d) for d in waiting}, {None})
        self.assertEqual(self.checked("alice", "secret"), "alice", "room again")

    def test_a_success_is_remembered_for_a_while_without_the_password(self) -> None:
        self.assertEqual(self.checked("alice", "secret"), "alice")
        self.assertEqual(self.successResultOf(self.check("alice", "secret")), "alice")
        self.assertEqual(self.pool.calls, [])
        self.assertNotIn(b"secret", b"".join(self.store._verified))
        self.assertIsNone(self.checked("alice", "secreT"))  # a different password is checked
        self.clock.advance(REMEMBER)
        self.check("alice", "secret")
        self.assertEqual(self.pool.names(), ["_checkpw"])

    def test_a_reload_replaces_users_and_forgets_what_was_remembered(self) -> None:
        self.assertEqual(self.checked("alice", "secret"), "alice")
        self.store.apply(Config(auth=settings(alice="changed", carol="new")))
        self.assertIsNone(self.checked("alice", "secret"))
        self.assertEqual(self.checked("alice", "changed"), "alice")
        self.assertIsNone(self.checked("bob", "hunter2"))
        self.assertEqual(self.checked("carol", "new"), "carol")
        self.assertTrue(self.store.knows("carol") and self.store.knows("ci"))
        self.assertFalse(self.store.knows("bob"))

    def test_a_user_removed_while_checked_does_not_log_in(self) -> None:
        d = self.check("alice", "secret")
        self.store.apply(Config(auth=replace(settings(bob="x"), static_tokens={})))
        self.pool.complete_all()
        self.assertIsNone(self.successResultOf(d))

    def admin(self, user: str, password: str) -> bool:
        d = Deferred.fromCoroutine(self.store.check_admin(user, password))
        self.pool.complete_all()
        return self.successResultOf(d)

    def test_admins(self) -> None:
        first = Deferred.fromCoroutine(self.store.check_admin("alice", "secret"))
        self.assertEqual(self.pool.names(), ["_checkpw"])  # bcrypt off the reactor thread
        self.pool.complete_all()
        self.assertTrue(self.successResultOf(first))
        remembered = Deferred.fromCoroutine(self.store.check_admin("alice", "secret"))
        self.assertEqual((self.pool.calls, self.successResultOf(remembered)), ([], True))
        self.assertFalse(self.admin("alice", "wrong"))
        self.assertFalse(self.admin("bob", "hunter2"))  # a user, not an admin
        self.assertTrue(self.admin("whoever", TOKEN))  # ci's token; ci is admin
        self.assertFalse(self.admin("mallory", "x"))

    def test_no_secret_in_the_repr(self) -> None:
        self.assertEqual(repr(self.store), "<UserStore users=2 tokens=1>")
