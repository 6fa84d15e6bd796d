"""One upstream GET per blob across the fleet: a lock per blob fill, in Redis.

Before an instance goes upstream for a blob it sets C{fill:<alg>:<hex>} if absent,
with an expiry (L{LOCK_TTL}), renewed while its fill and upload run. The winner
fills its cache, uploads the blob to S3 as any fill, and then releases the lock:
the release is the announcement the others wait for. They poll the lock (every
L{POLL} seconds) while it is held and, once it is gone, look for the blob in S3
again. A winner that dies stops renewing: its lock expires and the next waiter to
set it takes over. Redis away, or a wait past L{MAX_WAIT}, and an instance fills
on its own, as it would without a fleet.

A winner whose blob did not reach S3 (the fill failed, or the upload) says so
with C{unshared:<alg>:<hex>} for L{UNSHARED_TTL} seconds as it releases the lock:
the waiters, and whoever misses the blob meanwhile, fill on their own rather than
one after another behind a lock that shares nothing.

The lock's value is a random token of the claim, so only its holder renews or
releases it (a compare-and-set in a Lua script).
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from dockerproxy.digests import Digest
from dockerproxy.fleet.client import FleetClient

log = Logger()

# Seconds a lock lives without renewal: how long waiters wait for a dead holder.
LOCK_TTL = 15.0
# Seconds between two looks at a lock held by another instance.
POLL = 0.25
# Seconds an instance waits for another one's fill before it fills on its own.
MAX_WAIT = 600.0
# Seconds after a fill that did not reach S3 during which instances fill without the lock.
UNSHARED_TTL = 60

# What an attempt to set a lock found.
WON, HELD, ALONE = "won", "held", "alone"

RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """A fill this instance makes: the lock it holds (renewed until released), or none
    (C{token} None) when Redis could not be asked and the instance fills alone."""

    def __init__(self, locks: FillLocks, key: str, unshared: str, token: str | None) -> None:
        self.locks = locks
        self.key = key
        self.unshared = unshared
        self.token = token
        self._timer: IDelayedCall | None = None
        if token is not None:
            self._schedule()

    def _schedule(self) -> None:
        self._timer = self.locks.clock.callLater(self.locks.ttl / 3, self._renew)

    def _renew(self) -> None:
        self._timer = None
        key, token, ms = self.key, self.token, int(self.locks.ttl * 1000)
        self._schedule()

        def renewed(result: int | None) -> None:
            if result == 0 and self._timer is not None:
                log.warn("fleet: the fill lock {key} was lost (it expired); not renewed", key=key)
                self._timer.cancel()
                self._timer = None

        Deferred.fromCoroutine(
            self.locks.client.call("locks", lambda r: r.eval(RENEW, 1, key, token, ms))
        ).addCallback(renewed)

    def release(self, shared: bool = True) -> Deferred[Any] | None:
        """The fill (and its upload) is over: the others may look in S3 now, or, when the
        blob is not C{shared} there, fill on their own."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        key, unshared, token = self.key, self.unshared, self.token
        if token is None:
            return None
        self.token = None

        def release(r: Any) -> Any:
            if not shared:
                r.set(unshared, b"1", ex=UNSHARED_TTL)
            return r.eval(RELEASE, 1, key, token)

        return Deferred.fromCoroutine(self.locks.client.call("locks", release))


class FillLocks:
    """The fleet's blob-fill locks over C{client}."""

    def __init__(
        self,
        client: FleetClient,
        clock: IReactorTime,
        ttl: float = LOCK_TTL,
        poll: float = POLL,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.client = client
        self.clock = clock
        self.ttl = ttl
        self.poll = poll
        self.max_wait = max_wait

    async def claim(self, digest: Digest) -> Lease | None:
        """A L{Lease} when this instance is to fill C{digest} from the upstream; None when
        another instance held the lock and let it go meanwhile: look again (in S3)."""
        key = self.client.key("fill", digest.algorithm, digest.hex)
        unshared = self.client.key("unshared", digest.algorithm, digest.hex)
        token = secrets.token_hex(16)
        ms = int(self.ttl * 1000)

        def lock(r: Any) -> str:
            if r.exists(unshared):
                return ALONE
            return WON if r.set(key, token, nx=True, px=ms) else HELD

        outcome = await self.client.call("locks", lock)
        if outcome is None or outcome == ALONE:
            return Lease(self, key, unshared, None)
        if outcome == WON:
            return Lease(self, key, unshared, token)
        deadline = self.clock.seconds() + self.max_wait
        while self.clock.seconds() < deadline:
            await deferLater(self.clock, self.poll)
            held = await self.client.call("locks", lambda r: (r.exists(key), r.exists(unshared)))
            if held is None or held[1]:
                return Lease(self, key, unshared, None)
            if not held[0]:
                return None
        log.warn(
            "fleet: waited {seconds:g}s for another instance's fill of {digest}; filling here",
            seconds=self.max_wait,
            digest=digest,
        )
        return Lease(self, key, unshared, None)
