"""The fleet's access records (L{dockerproxy.fleet.records}) over the in-memory Redis: reads
shared by the requests waiting for them, kept a second, dropped when this instance writes,
never kept when Redis failed. The Lua merge itself runs in a real redis-server in
tests/integration/test_fleet_records.py."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.fleet import records
from dockerproxy.fleet.client import FleetClient
from dockerproxy.fleet.records import FRESH, FleetRecords, FleetUnavailable
from tests.unit.fakeredis import FakeRedis, down
from tests.unit.fakes import ManualPool, SyncPool
from tests.unit.records import MemoryRecords

REPO = "r.test/app"
PUBLIC = {"repository": REPO, "public": 5.0, "links": ["sha256:a"], "forgotten": []}


class FleetRecordsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis(self.clock)
        self.pool: Any = SyncPool()
        self.local = MemoryRecords()
        self.store = self.make()

    def make(self) -> FleetRecords:
        client = FleetClient(self.redis, self.pool, self.clock, "p:")
        return FleetRecords(client, self.local, ttl=3600)

    def reads(self) -> int:
        return self.redis.calls.count("hgetall")

    def test_changes_go_to_redis_and_the_local_records(self) -> None:
        self.store.save(REPO, PUBLIC)
        record = self.successResultOf(self.store.fetch(REPO))
        self.assertEqual(
            record, {"repository": REPO, "public": 5.0, "refused": None, "links": ["sha256:a"]}
        )
        self.assertEqual(self.local.documents[REPO]["public"], 5.0)

    def test_a_record_read_is_used_for_a_second(self) -> None:
        self.store.save(REPO, PUBLIC)
        self.successResultOf(self.store.fetch(REPO))
        self.clock.advance(FRESH / 2)
        self.successResultOf(self.store.fetch(REPO))
        self.assertEqual(self.reads(), 1)
        self.clock.advance(FRESH / 2)
        self.successResultOf(self.store.fetch(REPO))
        self.assertEqual(self.reads(), 2)

    def test_writing_the_record_drops_what_was_read(self) -> None:
        self.successResultOf(self.store.fetch(REPO))
        self.store.save(REPO, PUBLIC)
        self.assertEqual(self.successResultOf(self.store.fetch(REPO))["public"], 5.0)
        self.assertEqual(self.reads(), 2)

    def test_requests_waiting_for_one_read_share_it(self) -> None:
        self.store.save(REPO, PUBLIC)
        self.pool = ManualPool()
        store = self.make()
        first, second = store.fetch(REPO), store.fetch(REPO)
        self.assertEqual(len(self.pool.calls), 1)
        self.pool.complete()
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))

    def test_a_read_under_way_when_the_record_is_written_is_not_kept(self) -> None:
        self.pool = ManualPool()
        store = self.make()
        reading = store.fetch(REPO)
        store.save(REPO, PUBLIC)
        self.pool.complete(0)  # the read, which started before the write
        self.assertIsNone(self.successResultOf(reading))
        store.fetch(REPO)
        self.assertEqual(len(self.pool.calls), 2, "the write, and a new read")

    def test_redis_down_fails_every_waiter_and_nothing_is_kept(self) -> None:
        self.redis.fail = down()
        self.pool = ManualPool()
        store = self.make()
        first, second = store.fetch(REPO), store.fetch(REPO)
        self.pool.complete()
        for waiting in (first, second):
            self.failureResultOf(waiting, FleetUnavailable)
        self.redis.fail = None
        self.clock.advance(6)  # past the back-off
        self.assertNoResult(reading := store.fetch(REPO))
        self.pool.complete()
        self.assertIsNone(self.successResultOf(reading))

    def test_records_read_are_bounded(self) -> None:
        self.patch(records, "MAX_REMEMBERED", 3)
        for i in range(5):
            self.successResultOf(self.store.fetch(f"r.test/{i}"))
        self.assertEqual(list(self.store._read), ["r.test/2", "r.test/3", "r.test/4"])
        self.successResultOf(self.store.fetch("r.test/0"))
        self.assertEqual(self.reads(), 6, "the oldest was forgotten")
