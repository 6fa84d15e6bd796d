"""The history's service (L{dockerproxy.admin.service.HistoryService}): a minute's tally
recorded at its end, the history written on the disk pool, loaded again at start."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.admin.history import History
from dockerproxy.admin.historyfile import FILENAME, TEMPORARY, HistoryFile
from dockerproxy.admin.metrics import Metrics
from dockerproxy.admin.service import SETTLE, HistoryService
from dockerproxy.cache.diskio import DiskWork
from tests.unit.fakes import ManualPool, scratch_dir

START = 1_740_000_030.0  # half a minute into a minute


class HistoryServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.pool = ManualPool()
        self.path = scratch_dir(self) / FILENAME

    def start(self) -> tuple[HistoryService, Metrics]:
        metrics = Metrics(self.clock)
        file = HistoryFile(self.path, DiskWork(self.pool))
        service = HistoryService(self.clock, History(), metrics, file)
        service.startService()
        return service, metrics

    def test_a_minute_is_recorded_at_its_end_and_written_off_the_reactor(self) -> None:
        service, metrics = self.start()
        minute = int(START // 60)
        metrics.tally.requests = 4
        self.clock.advance(29.9 + SETTLE)
        self.assertEqual(service.history.series(minute + 1)["requests"][-2:], [None, None])
        self.clock.advance(0.2)
        self.assertEqual(service.history.series(minute + 1)["requests"][-2:], [4, None])
        self.assertEqual(metrics.tally.requests, 0)
        self.assertFalse(self.path.exists(), "written on the pool, not yet run")
        self.assertEqual(self.pool.names(), ["write_json"])
        self.pool.complete_all()
        self.assertEqual(json.loads(self.path.read_text())["minutes"][0][:2], [minute, 4])
        self.clock.advance(60)
        self.assertEqual(self.pool.names(), ["write_json"], "the next minute's write")
        service.stopService()

    def test_the_stop_records_the_minute_under_way_and_waits_for_the_write(self) -> None:
        service, metrics = self.start()
        metrics.tally.requests = 2
        done: list[object] = []
        stopped = service.stopService()
        stopped.addBoth(done.append)
        self.assertEqual(done, [])
        self.pool.complete_all()
        self.assertEqual(done, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        restarted, _ = self.start()
        self.assertEqual(restarted.history.series(int(START // 60))["requests"][-1], 2)
        restarted.stopService()
        self.pool.complete_all()

    def test_a_damaged_file_is_ignored_with_a_log_line(self) -> None:
        self.path.write_text('{"version": 1, "minutes": "no"}')
        leftover = self.path.with_name(TEMPORARY + "x.json")
        leftover.write_text("{")
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service, _ = self.start()
        self.assertEqual(service.history.series(int(START // 60))["requests"][-1], None)
        [warning] = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn("status history: ignoring", formatEvent(warning))
        self.assertFalse(leftover.exists(), "a write a crash cut short is deleted")
        service.stopService()
        self.pool.complete_all()
        self.assertEqual(json.loads(self.path.read_text())["version"], 1, "replaced")
