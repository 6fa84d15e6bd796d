"""One upstream GET per blob across the fleet: a lock per blob fill, in Redis.

Before an instance goes upstream for a blob it sets C{fill:<alg>:<hex>} if absent,
with an expiry (L{LOCK_TTL}), renewed while its fill and upload run. The winner
fills its cache, uploads the blob to S3 as any fill, and then releases the lock:
the release is the announcement the others wait for. They poll the lock (every
L{POLL} seconds) while it is held and, once it is gone, look for the blob in S3
again. A winner that dies stops renewing: its lock expires and the next waiter to
set it takes over. Redis away, or a wait past L{MAX_WAIT}, and an instance fills
on its own, as it would without a fleet.

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

    def __init__(self, locks: FillLocks, key: str, token: str | None) -> None:
        self.locks = locks
        self.key = key
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

    def release(self) -> Deferred[Any] | None:
        """The fill (and its upload) is over: the others may look in S3 now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        key, token = self.key, self.token
        if token is None:
            return None
        self.token = None
        return Deferred.fromCoroutine(
            self.locks.client.call("locks", lambda r: r.eval(RELEASE, 1, key, token))
        )


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
        token = secrets.token_hex(16)
        ms = int(self.ttl * 1000)
        won = await self.client.call("locks", lambda r: bool(r.set(key, token, nx=True, px=ms)))
        if won is None:
            return Lease(self, key, None)
        if won:
            return Lease(self, key, token)
        deadline = self.clock.seconds() + self.max_wait
        while self.clock.seconds() < deadline:
            await deferLater(self.clock, self.poll)
            held = await self.client.call("locks", lambda r: r.exists(key))
            if held is None:
                return Lease(self, key, None)
            if not held:
                return None
        log.warn(
            "fleet: waited {seconds:g}s for another instance's fill of {digest}; filling here",
            seconds=self.max_wait,
            digest=digest,
        )
        return Lease(self, key, None)
