"""The cache's disk pool (L{DiskWork}, L{ThreadedPool}) and its metadata documents
(L{Documents}): calls run on the pool, in order per key, tracked until done; writes of a
key are coalesced and read back before they reach the disk.

A L{ManualPool} holds every call until the test runs it, so what has and has not
happened yet is visible; one test runs a real ThreadPool.
"""

from __future__ import annotations

import errno
import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.cache.diskio import DiskWork, ThreadedPool
from dockerproxy.cache.documents import Documents
from dockerproxy.cache.store import FilesystemStore
from tests.unit.fakes import ManualPool, lines_logged, scratch_dir


def fired(d: Deferred[Any]) -> list[Any]:
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    return outcome


class DiskWorkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = ManualPool()
        self.disk = DiskWork(self.pool)
        self.done: list[str] = []

    def step(self, name: str) -> Callable[[], str]:
        def call() -> str:
            self.done.append(name)
            return name

        call.__name__ = name
        return call

    def test_a_call_runs_on_the_pool_and_its_result_comes_back(self) -> None:
        outcome = fired(self.disk.run(self.step("a")))
        self.assertEqual((self.done, outcome, self.pool.names()), ([], [], ["a"]))
        self.pool.complete()
        self.assertEqual((self.done, outcome), (["a"], ["a"]))

    def test_calls_with_one_key_run_one_after_another_in_order(self) -> None:
        for name in ("commit", "touch", "remove"):
            self.disk.run(self.step(name), key="blob")
        self.assertEqual(self.pool.names(), ["commit"], "the next waits for the first")
        self.pool.complete()
        self.assertEqual(self.pool.names(), ["touch"])
        self.pool.complete()
        self.pool.complete()
        self.assertEqual(self.done, ["commit", "touch", "remove"])

    def test_calls_with_other_keys_or_none_run_side_by_side(self) -> None:
        self.disk.run(self.step("a"), key="one")
        self.disk.run(self.step("b"), key="two")
        self.disk.run(self.step("c"))
        self.disk.run(self.step("d"))
        self.assertEqual(self.pool.names(), ["a", "b", "c", "d"])

    def test_a_failure_comes_back_as_a_failure_and_the_key_goes_on(self) -> None:
        def full() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        outcome = fired(self.disk.run(full, key="k"))
        after = fired(self.disk.run(self.step("next"), key="k"))
        self.pool.complete()
        self.assertIsInstance(outcome[0], Failure)
        self.assertEqual(outcome[0].value.errno, errno.ENOSPC)
        self.pool.complete()
        self.assertEqual(after, ["next"])

    def test_the_callers_callbacks_run_before_the_keys_next_call(self) -> None:
        first = self.disk.run(self.step("first"), key="k")
        first.addCallback(lambda _: self.done.append("first's callback"))
        self.disk.run(self.step("second"), key="k")
        self.pool.complete()
        self.assertEqual(self.done, ["first", "first's callback"])
        self.pool.complete()
        self.assertEqual(self.done[-1], "second")

    def test_background_logs_a_failure_and_raises_nothing(self) -> None:
        logged = lines_logged(self)

        def broken() -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.disk.background("touch sha256:ab", broken)
        self.pool.complete()
        self.assertTrue(
            any(
                "cannot touch sha256:ab" in line and "Input/output error" in line for line in logged
            ),
            logged,
        )

    def test_idle_fires_at_once_with_nothing_to_do(self) -> None:
        self.assertEqual(fired(self.disk.idle()), [None])

    def test_idle_waits_for_the_work_that_results_start(self) -> None:
        """A commit's result starts a touch: idle must not fire between the two."""
        commit = self.disk.run(self.step("commit"), key="blob")
        commit.addCallback(lambda _: self.disk.run(self.step("touch"), key="blob"))
        self.disk.run(self.step("write"))
        idle = fired(self.disk.idle())
        self.pool.complete()  # the commit: its callback queues the touch
        self.pool.complete()  # the write
        self.assertEqual((idle, self.disk.outstanding, self.pool.names()), ([], 1, ["touch"]))
        self.pool.complete()
        self.assertEqual((idle, self.disk.outstanding), ([None], 0))


class FakeReactor:
    """Only what deferToThreadPool needs: callFromThread, queued for the test's thread."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., object], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        self.calls.put((f, args))

    def run_one(self) -> None:
        f, args = self.calls.get(timeout=30)
        f(*args)


class ThreadedPoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.threadpool = ThreadPool(minthreads=1, maxthreads=1, name="test-disk")
        self.threadpool.start()
        self.addCleanup(self.threadpool.stop)
        self.reactor = FakeReactor()
        self.pool = ThreadedPool(self.reactor, self.threadpool)  # type: ignore[arg-type]

    def test_calls_run_in_a_pool_thread_and_fire_in_the_reactors(self) -> None:
        outcome = fired(self.pool.run(threading.get_ident))
        self.reactor.run_one()  # the result, handed over by callFromThread
        self.assertEqual(len(outcome), 1)
        self.assertNotEqual(outcome[0], threading.get_ident())

    def test_a_report_from_a_call_reaches_the_reactor_thread_before_its_result(self) -> None:
        reported: list[tuple[str, int]] = []

        def work() -> str:
            self.pool.report(lambda n: reported.append(("report", n)), threading.get_ident())
            return "result"

        outcome = fired(self.pool.run(work))
        self.reactor.run_one()
        self.assertEqual((len(reported), outcome), (1, []), "in order: the report first")
        self.assertNotEqual(reported[0][1], threading.get_ident(), "made on the pool's thread")
        self.reactor.run_one()
        self.assertEqual(outcome, ["result"])

    def test_an_exception_in_the_thread_is_a_failure(self) -> None:
        def broken() -> None:
            raise OSError(errno.EIO, "Input/output error")

        outcome = fired(self.pool.run(broken))
        self.reactor.run_one()
        self.assertIsInstance(outcome[0], Failure)
        self.assertEqual(outcome[0].value.errno, errno.EIO)


class DocumentsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = FilesystemStore(scratch_dir(self), fsync=False)
        self.store.create()
        self.pool = ManualPool()
        self.documents = Documents(self.store, DiskWork(self.pool))

    def test_a_write_runs_on_the_pool_and_is_read_back_before_it_lands(self) -> None:
        self.documents.write_meta("tags/t", {"v": 1})
        self.assertEqual(self.pool.names(), ["write_meta"])
        self.assertIsNone(self.store.read_meta("tags/t"), "nothing written inline")
        self.assertEqual(self.documents.read_meta("tags/t"), {"v": 1})
        self.pool.complete()
        self.assertEqual(self.store.read_meta("tags/t"), {"v": 1})
        self.assertEqual(self.documents.read_meta("tags/t"), {"v": 1})

    def test_writes_of_one_key_are_coalesced_and_the_last_one_wins(self) -> None:
        for v in range(1, 5):
            self.documents.write_meta("tags/t", {"v": v})
        self.assertEqual(self.pool.names(), ["write_meta"], "one write at a time per key")
        self.assertEqual(self.documents.read_meta("tags/t"), {"v": 4})
        self.pool.complete()  # {"v": 1} lands; 2 and 3 were replaced before they started
        self.assertEqual(self.store.read_meta("tags/t"), {"v": 1})
        self.assertEqual(self.documents.read_meta("tags/t"), {"v": 4})
        self.assertEqual([args[1] for _, args in self.pool.calls], [{"v": 4}])
        self.pool.complete()
        self.assertEqual((self.store.read_meta("tags/t"), self.pool.calls), ({"v": 4}, []))

    def test_a_removal_is_ordered_with_the_writes_of_its_key(self) -> None:
        self.documents.write_meta("access/a", {"v": 1})
        self.documents.remove_meta("access/a")
        self.assertIsNone(self.documents.read_meta("access/a"))
        self.pool.complete_all()
        self.assertFalse(self.store.meta_path("access/a").exists())
        self.documents.remove_meta("access/a")
        self.documents.write_meta("access/a", {"v": 2})
        self.pool.complete_all()
        self.assertEqual(self.store.read_meta("access/a"), {"v": 2})

    def test_keys_are_written_side_by_side(self) -> None:
        self.documents.write_meta("tags/a", {"v": 1})
        self.documents.write_meta("tags/b", {"v": 2})
        self.assertEqual(self.pool.names(), ["write_meta", "write_meta"])

    def test_a_failed_write_is_logged_and_the_next_one_still_goes(self) -> None:
        logged = lines_logged(self)
        self.store.write_meta("tags/t", {"v": 0})

        def full(key: str, value: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.store.write_meta = full  # type: ignore[method-assign]
        self.documents.write_meta("tags/t", {"v": 1})  # on the pool, to fail
        self.documents.write_meta("tags/t", {"v": 2})  # waiting behind it
        del self.store.write_meta
        self.pool.complete()
        self.assertTrue(
            any("cannot write metadata tags/t" in line and "No space" in line for line in logged),
            logged,
        )
        self.assertEqual(self.documents.read_meta("tags/t"), {"v": 2})
        self.pool.complete()
        self.assertEqual(self.store.read_meta("tags/t"), {"v": 2})
        self.store.write_meta = full  # type: ignore[method-assign]
        self.documents.write_meta("tags/t", {"v": 3})
        self.pool.complete()
        self.assertEqual(self.documents.read_meta("tags/t"), {"v": 2}, "what the disk has")

    def test_an_unsafe_key_fails_in_the_caller(self) -> None:
        with self.assertRaises(ValueError):
            self.documents.write_meta("../escape", {})
        self.assertEqual(self.pool.calls, [])
