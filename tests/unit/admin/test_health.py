"""C{/readyz}'s checks (L{dockerproxy.admin.health}): draining, the cache's disk (on the
pool, with a deadline), an upstream reached lately or probed, at most one of each at once."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.admin.health import (
    DISK_TIMEOUT,
    PROBE_INTERVAL,
    REACHED_WINDOW,
    Readiness,
    ReadinessCheck,
    cache_problem,
)
from tests.unit.fakes import ManualPool, SyncPool, scratch_dir


class ReadinessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.draining = False
        self.reached: float | None = self.clock.seconds()
        self.probes: list[Deferred[bool]] = []
        self.cache = scratch_dir(self)

    def probe(self) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.probes.append(d)
        return d

    def checker(self, pool: object = None, cache: Path | None = None) -> ReadinessCheck:
        return ReadinessCheck(
            self.clock,
            lambda: self.draining,
            lambda: self.reached,
            self.probe,
            cache if cache is not None else self.cache,
            pool or SyncPool(),  # type: ignore[arg-type]
        )

    def outcome(self, check: ReadinessCheck) -> list[Readiness]:
        results: list[Readiness] = []
        ensureDeferred(check.check()).addCallback(results.append)
        return results

    def test_ready_when_all_is_well(self) -> None:
        [readiness] = self.outcome(self.checker())
        self.assertTrue(readiness.ready)
        self.assertEqual(readiness.checks, {"draining": "ok", "cache": "ok", "upstream": "ok"})

    def test_not_ready_while_draining(self) -> None:
        self.draining = True
        [readiness] = self.outcome(self.checker())
        self.assertFalse(readiness.ready)
        self.assertIn("draining", readiness.checks["draining"])

    def test_not_ready_when_the_cache_directory_is_gone(self) -> None:
        [readiness] = self.outcome(self.checker(cache=self.cache / "gone"))
        self.assertFalse(readiness.ready)
        self.assertIn("not writable", readiness.checks["cache"])
        self.assertIsNone(cache_problem(self.cache))

    def test_a_disk_that_does_not_answer_is_not_ready_after_the_deadline(self) -> None:
        pool = ManualPool()
        check = self.checker(pool)
        first, second = self.outcome(check), self.outcome(check)
        self.assertEqual(pool.names(), ["cache_problem"], "one disk check for both")
        self.clock.advance(DISK_TIMEOUT)
        self.assertEqual(first, second)
        self.assertIn("did not answer", first[0].checks["cache"])

    def test_no_upstream_lately_asks_one_itself(self) -> None:
        self.clock.advance(REACHED_WINDOW + 1)
        check = self.checker()
        first, second = self.outcome(check), self.outcome(check)
        self.assertEqual(len(self.probes), 1, "one probe for both")
        self.reached = self.clock.seconds()  # the probe's answer reports it
        self.probes[0].callback(True)
        self.assertTrue(first[0].ready and second[0].ready)

    def test_an_unreachable_upstream_is_probed_at_most_every_interval(self) -> None:
        self.reached = None
        check = self.checker()
        results = self.outcome(check)
        self.probes[0].callback(False)
        self.assertFalse(results[0].ready)
        self.assertIn("no upstream answered", results[0].checks["upstream"])
        self.outcome(check)
        self.assertEqual(len(self.probes), 1, "not again so soon")
        self.clock.advance(PROBE_INTERVAL)
        self.outcome(check)
        self.assertEqual(len(self.probes), 2)

    def test_without_a_cache_only_the_rest_is_checked(self) -> None:
        check = ReadinessCheck(self.clock, lambda: False, lambda: self.reached, None)
        [readiness] = self.outcome(check)
        self.assertTrue(readiness.ready)
