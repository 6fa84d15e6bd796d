"""The fleet's blob-fill locks (L{dockerproxy.fleet.locks}) on a Clock over the in-memory
Redis: won, renewed while held, released by their holder only, waited for, and given up on
when Redis is away or the wait is too long."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.digests import parse
from dockerproxy.fleet.client import FleetClient
from dockerproxy.fleet.locks import FillLocks, Lease
from tests.unit.fakeredis import FakeRedis, down
from tests.unit.fakes import SyncPool

DIGEST = parse("sha256:" + "ab" * 32)
KEY = f"p:fill:sha256:{'ab' * 32}"


class FillLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis(self.clock)
        client = FleetClient(self.redis, SyncPool(), self.clock, "p:")
        self.locks = FillLocks(client, self.clock, ttl=15.0, poll=0.25, max_wait=60.0)

    def claim(self) -> Deferred[Lease | None]:
        return Deferred.fromCoroutine(self.locks.claim(DIGEST))

    def test_a_held_lock_is_renewed_until_released(self) -> None:
        lease = self.successResultOf(self.claim())
        assert lease is not None
        self.assertIsNotNone(lease.token)
        for _ in range(12):  # a minute: four times the lock's life
            self.clock.advance(5)
        self.assertEqual(self.redis.get(KEY), lease.token.encode())  # type: ignore[union-attr]
        lease.release()
        self.assertIsNone(self.redis.get(KEY))
        self.assertEqual(self.clock.getDelayedCalls(), [], "no renewal left behind")

    def test_a_release_never_takes_another_holders_lock(self) -> None:
        lease = self.successResultOf(self.claim())
        assert lease is not None
        self.clock.advance(16)  # lost: Redis was too slow for the renewals, say
        self.redis.data.clear()
        self.redis.set(KEY, "theirs")
        lease.release()
        self.assertEqual(self.redis.get(KEY), b"theirs")

    def test_a_waiter_looks_again_once_the_holder_lets_go(self) -> None:
        self.redis.set(KEY, "theirs", px=15_000)
        waiting = self.claim()
        self.clock.advance(5)
        self.assertNoResult(waiting)
        self.redis.delete(KEY)
        self.clock.advance(0.25)
        self.assertIsNone(self.successResultOf(waiting), "look in S3 again")

    def test_a_fill_that_reached_no_s3_lets_everyone_fill_alone_for_a_while(self) -> None:
        lease = self.successResultOf(self.claim())
        assert lease is not None
        waiting = self.claim()
        lease.release(shared=False)
        self.clock.advance(0.25)
        alone = self.successResultOf(waiting)
        assert alone is not None
        self.assertIsNone(alone.token, "the waiter fills without the lock")
        newcomer = self.successResultOf(self.claim())
        assert newcomer is not None
        self.assertIsNone(newcomer.token)
        self.assertIsNone(self.redis.get(KEY))
        self.clock.advance(60)
        later = self.successResultOf(self.claim())
        assert later is not None
        self.assertIsNotNone(later.token, "a minute later the lock is taken again")

    def test_redis_away_the_instance_fills_alone(self) -> None:
        self.redis.fail = down()
        lease = self.successResultOf(self.claim())
        assert lease is not None
        self.assertIsNone(lease.token)
        self.assertIsNone(lease.release())

    def test_redis_failing_mid_wait_the_waiter_fills_alone(self) -> None:
        self.redis.set(KEY, "theirs", px=15_000)
        waiting = self.claim()
        self.clock.advance(1)
        self.redis.fail = down()
        self.clock.advance(0.25)
        lease = self.successResultOf(waiting)
        assert lease is not None
        self.assertIsNone(lease.token)

    def test_a_wait_is_bounded(self) -> None:
        def keep_renewing() -> None:
            self.redis.set(KEY, "theirs", px=15_000)
            self.clock.callLater(5, keep_renewing)

        keep_renewing()
        waiting = self.claim()
        self.clock.pump([0.25] * 239)
        self.assertNoResult(waiting)
        self.clock.pump([0.25] * 2)
        lease = self.successResultOf(waiting)
        assert lease is not None
        self.assertIsNone(lease.token, "after 60 s it fills without the lock")
