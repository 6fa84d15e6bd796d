"""Trimming the heap after responses end: when, how often, after aborts, without glibc."""

from __future__ import annotations

import ctypes

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.heap import TRIM_DELAY, HeapTrimmer, malloc_trim


class Calls:
    """A stand-in for malloc_trim(0) or gc.collect() that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return 1


class HeapTrimmerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.trims = Calls()
        self.collections = Calls()
        self.heap = HeapTrimmer(self.clock, self.trims, collect=self.collections)

    def test_trims_once_the_delay_after_a_response_ends(self) -> None:
        self.heap.response_ended()
        self.clock.advance(TRIM_DELAY - 0.1)
        self.assertEqual(self.trims.calls, 0)
        self.clock.advance(0.1)
        self.assertEqual(self.trims.calls, 1)
        self.clock.advance(TRIM_DELAY * 10)
        self.assertEqual(self.trims.calls, 1)

    def test_a_burst_of_ends_trims_once(self) -> None:
        for _ in range(100):
            self.heap.response_ended()
            self.clock.advance(TRIM_DELAY / 200)
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(self.trims.calls, 1)

    def test_an_end_after_a_trim_gets_a_trim_of_its_own(self) -> None:
        """What a relay ending just after a trim frees is given back too."""
        self.heap.response_ended()
        self.clock.advance(TRIM_DELAY)
        self.heap.response_ended()
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(self.trims.calls, 2)

    def test_a_finished_response_is_not_followed_by_a_collection(self) -> None:
        self.heap.response_ended()
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(self.collections.calls, 0)

    def test_an_aborted_response_is_followed_by_a_collection_then_a_trim(self) -> None:
        """Its unsent bytes may sit in a reference cycle (Twisted's TLS wrapper)."""
        order: list[str] = []
        heap = HeapTrimmer(
            self.clock, lambda: order.append("trim"), collect=lambda: order.append("collect")
        )
        heap.response_ended()
        heap.response_ended(aborted=True)
        heap.response_ended()
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(order, ["collect", "trim"])
        heap.response_ended()
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(order, ["collect", "trim", "trim"])

    def test_nothing_is_scheduled_without_malloc_trim(self) -> None:
        heap = HeapTrimmer(self.clock, None, collect=self.collections)
        heap.response_ended()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_abort_is_collected_without_malloc_trim(self) -> None:
        heap = HeapTrimmer(self.clock, None, collect=self.collections)
        heap.response_ended(aborted=True)
        self.clock.advance(TRIM_DELAY)
        self.assertEqual(self.collections.calls, 1)


class MallocTrimTests(SynchronousTestCase):
    def test_a_c_library_without_it_gives_none(self) -> None:
        """musl, macOS: no malloc_trim symbol, so no trimming."""
        self.assertIsNone(malloc_trim(object()))
        self.assertIsNone(malloc_trim(None))

    def test_this_process_trims_with_glibc(self) -> None:
        """The suite runs on glibc (Debian): the real call goes through and succeeds."""
        trim = malloc_trim(ctypes.CDLL(None))
        assert trim is not None
        self.assertIn(trim(), (0, 1))

    def test_for_this_process_schedules_a_trim(self) -> None:
        clock = Clock()
        heap = HeapTrimmer.for_this_process(clock)
        heap.response_ended()
        [call] = clock.getDelayedCalls()
        clock.advance(TRIM_DELAY)
        self.assertFalse(call.active())
