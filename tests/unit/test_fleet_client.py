"""The fleet's Redis client (L{dockerproxy.fleet.client}): Redis down or slow is a fallback,
logged once per outage, counted, and skipped for a back-off; calls waiting are bounded."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.admin.metrics import Metrics
from dockerproxy.fleet.client import FleetClient
from tests.unit.fakeredis import FakeRedis, down
from tests.unit.fakes import ManualPool, SyncPool, lines_logged


class FleetClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis(self.clock)
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.clock, self.registry)
        self.client = FleetClient(
            self.redis, SyncPool(), self.clock, "p:", self.metrics, backoff=5.0
        )
        self.lines = lines_logged(self)

    def get(self, key: str = "k") -> Any:
        return self.successResultOf(
            Deferred.fromCoroutine(self.client.call("tags", lambda r: r.get(key)))
        )

    def fallbacks(self) -> float:
        value = self.registry.get_sample_value(
            "dockerproxy_fleet_fallbacks_total", {"operation": "tags"}
        )
        return value or 0.0

    def test_an_answer_is_returned_and_keys_are_prefixed(self) -> None:
        self.redis.set("p:k", b"v")
        self.assertEqual(self.client.key("k"), "p:k")
        self.assertEqual(self.get("p:k"), b"v")
        self.assertEqual(self.fallbacks(), 0)

    def test_redis_down_is_a_fallback_logged_once_and_counted(self) -> None:
        self.redis.fail = down()
        self.assertIsNone(self.get())
        self.clock.advance(6)
        self.assertIsNone(self.get())
        self.assertEqual(self.fallbacks(), 2)
        self.assertEqual(sum("fleet: Redis failed" in line for line in self.lines), 1)
        self.assertIn("Connection refused", "\n".join(self.lines))
        self.redis.fail = None
        self.clock.advance(6)
        self.assertIsNone(self.get())  # the key is not there: an answer all the same
        self.assertEqual(self.fallbacks(), 2)
        self.assertEqual(sum("Redis answers again" in line for line in self.lines), 1)

    def test_within_the_back_off_redis_is_not_asked(self) -> None:
        self.redis.fail = down()
        self.get()
        self.redis.fail = None
        self.redis.calls.clear()
        self.clock.advance(4)
        self.assertIsNone(self.get())
        self.assertEqual(self.redis.calls, [], "no wait for a Redis that just failed")
        self.assertEqual(self.fallbacks(), 2)

    def test_calls_waiting_for_a_thread_are_bounded(self) -> None:
        pool = ManualPool()
        client = FleetClient(self.redis, pool, self.clock, "p:", self.metrics, max_pending=2)
        waiting = [
            Deferred.fromCoroutine(client.call("tags", lambda r: r.get("k"))) for _ in range(3)
        ]
        self.assertEqual(len(pool.calls), 2)
        self.assertIsNone(self.successResultOf(waiting[2]), "the third fell back at once")
        self.assertEqual(self.fallbacks(), 1)
        pool.complete()
        pool.complete()
        self.assertEqual(client.pending, 0)
