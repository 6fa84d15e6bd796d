"""The proxy's users: htpasswd entries and static tokens, and which of them are admins.

Passwords are checked with bcrypt, which is slow on purpose (60 ms of CPU at cost 10,
2.4 ms at htpasswd -B's 5, on one core of the project's VM): on the proxy's thread
pool, never in the reactor, and at most L{MAX_CHECKS} at a time so logins cannot take
every thread from the cache's disk work. A success is remembered for L{REMEMBER}
seconds as an HMAC under a key of this process, so a CI job's many token requests or
an admin's scrapes cost one bcrypt a while and no password is ever kept. An unknown
user name costs a bcrypt too (against another user's hash, its answer ignored), so
timing does not tell which user names exist.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import bcrypt
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime

from dockerproxy.config import AuthSettings, Config
from dockerproxy.userfiles import BCRYPT_MAX_PASSWORD

T = TypeVar("T")
MAX_CHECKS = 2  # bcrypt checks running at once
MAX_WAITING = 64  # checks queued behind them; more are refused at once (TooManyChecks)
REMEMBER = 300.0  # seconds a verified user and password is remembered
MAX_REMEMBERED = 10_000


class TooManyChecks(Exception):
    """More password checks wait than L{MAX_WAITING}: a flood of logins is refused at once
    rather than queued, so it cannot make everyone's login wait minutes."""


class Pool(Protocol):
    """Runs a blocking call off the reactor (L{dockerproxy.cache.diskio.ThreadedPool})."""

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]: ...


class UserStore:
    """Who may log in; replaced as a whole by L{apply} when the settings are reloaded."""

    def __init__(self, settings: AuthSettings, pool: Pool, clock: IReactorTime) -> None:
        self.pool = pool
        self.clock = clock
        self._checks = DeferredSemaphore(MAX_CHECKS)
        self._secret = secrets.token_bytes(32)
        self._use(settings)

    def __repr__(self) -> str:
        return f"<UserStore users={len(self._users)} tokens={len(self._token_names)}>"

    def apply(self, config: Config) -> None:
        """Take the users, tokens and admins of a reloaded C{config}."""
        self._use(config.auth)

    def _use(self, settings: AuthSettings) -> None:
        self._users = dict(settings.users)
        self._token_names = {
            _digest(t.encode()): name for name, t in settings.static_tokens.items()
        }
        self._admins = frozenset(settings.admins)
        self._verified: OrderedDict[bytes, float] = OrderedDict()

    def knows(self, name: str) -> bool:
        """A user or a token name of the current settings."""
        return name in self._users or name in self._token_names.values()

    def token_user(self, token: bytes) -> str | None:
        """The name of the static token C{token}, if it is one (a lookup by its SHA-256,
        so the comparison takes the same time whatever the token)."""
        return self._token_names.get(_digest(token))

    async def check_password(self, user: str, password: bytes) -> str | None:
        """Who logs in with C{user} and C{password}: the token's name when the password is a
        static token (with any user name), C{user} when it matches the htpasswd entry."""
        name = self.token_user(password)
        if name is not None:
            return name
        hashed = self._users.get(user)
        if hashed is not None and self._remembered(user, password):
            return user
        checked = hashed or next(iter(self._users.values()), None)
        if checked is None:
            return None
        if len(self._checks.waiting) >= MAX_WAITING:
            raise TooManyChecks()
        ok = await self._checks.run(self.pool.run, _checkpw, password, checked)
        if not ok or hashed is None or self._users.get(user) != hashed:
            return None
        self._remember(user, password)
        return user

    async def check_admin(self, user: str, password: str) -> bool:
        """Whether C{user} / C{password} is an admin (C{[auth] admins}), for the admin
        listener: a user's password (checked as a login is) or an admin token's."""
        secret = password.encode()
        name = self.token_user(secret)
        if name is not None:
            return name in self._admins
        if user not in self._admins:
            return False
        return await self.check_password(user, secret) == user

    def _key(self, user: str, password: bytes) -> bytes:
        return hmac.digest(self._secret, user.encode() + b"\0" + password, "sha256")

    def _remembered(self, user: str, password: bytes) -> bool:
        until = self._verified.get(self._key(user, password))
        return until is not None and until > self.clock.seconds()

    def _remember(self, user: str, password: bytes) -> None:
        key = self._key(user, password)
        self._verified.pop(key, None)
        self._verified[key] = self.clock.seconds() + REMEMBER
        while len(self._verified) > MAX_REMEMBERED:
            self._verified.popitem(last=False)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    # bcrypt uses the first 72 bytes (htpasswd -B too); the bcrypt package refuses more.
    return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()
