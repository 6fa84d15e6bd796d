"""Access records shared by several processes (workers on one cache directory, a fleet
on one Redis): each one's news reaches the others, a refusal above all."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from dockerproxy.access import AccessCache
from dockerproxy.accessrecords import MetaRecords, merged
from dockerproxy.cache.diskio import DiskWork
from dockerproxy.cache.documents import Documents
from dockerproxy.cache.store import FilesystemStore
from tests.unit.fakes import ManualPool, sync_disk
from tests.unit.records import MemoryRecords

REPO = ("docker.io", "library/alpine")
ALICE = b"Bearer alice-token"
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def refreshed(access: AccessCache, repo: tuple[str, str] = REPO) -> AccessCache:
    done = Deferred.fromCoroutine(access.refresh(repo))
    assert done.called, "a record store that answers at once refreshes at once"
    return access


def two_processes(records: Any) -> tuple[AccessCache, AccessCache, Clock]:
    """Two access caches on one store and one clock, as two workers would be."""
    clock = Clock()
    clock.advance(1000)
    return AccessCache(clock, records=records), AccessCache(clock, records=records), clock


@pytest.fixture
def store() -> Iterator[FilesystemStore]:
    path = Path(tempfile.mkdtemp(prefix="dockerproxy-test-"))
    store = FilesystemStore(path)
    store.create()
    yield store
    shutil.rmtree(path, ignore_errors=True)


def test_one_process_learns_a_repository_is_public_and_the_other_serves_it() -> None:
    a, b, clock = two_processes(MemoryRecords(shared=True))
    a.note_served(None, REPO, DIGEST)
    clock.advance(1)
    assert not b.may_read(None, REPO), "not before it reads the shared record"
    refreshed(b)
    assert b.may_read(None, REPO) and b.is_linked(REPO, DIGEST)


def test_a_refusal_one_process_learns_stops_the_other_serving_from_cache() -> None:
    """The other process holds the repository public; this one never knew it was."""
    a, b, clock = two_processes(MemoryRecords(shared=True))
    b.note_served(None, REPO, DIGEST)
    clock.advance(1)
    a.note_refused(None, REPO)  # the repository went private upstream
    clock.advance(1)
    assert b.may_read(None, REPO), "b has not heard yet"
    assert not refreshed(b).may_read(None, REPO)
    assert b.is_linked(REPO, DIGEST), "the content stays linked: readers with grants"


def test_a_refusal_is_shared_at_once_not_after_the_save_delay() -> None:
    """No window in which the other process still serves the repository from cache."""
    a, b, clock = two_processes(MemoryRecords(shared=True))
    b.note_served(None, REPO, DIGEST)
    clock.advance(1)
    a.note_refused(None, REPO)
    assert not refreshed(b).may_read(None, REPO)


def test_older_news_that_a_repository_was_public_cannot_undo_a_newer_refusal() -> None:
    records = MemoryRecords(shared=True)
    a, b, clock = two_processes(records)
    b.note_served(None, REPO, DIGEST)  # saved a second from now
    a.note_served(None, REPO)
    a.flush()
    clock.advance(0.5)
    a.note_refused(None, REPO)
    a.flush()
    clock.advance(1)  # b's older news arrives after the refusal
    assert not refreshed(a).may_read(None, REPO)
    assert not refreshed(b).may_read(None, REPO)
    b.note_served(None, REPO)  # and once served anonymously again, it is public again
    b.flush()
    assert refreshed(a).may_read(None, REPO)


def test_unsaved_news_survives_a_refresh() -> None:
    a, _, _ = two_processes(MemoryRecords(shared=True))
    a.note_served(None, REPO, DIGEST)
    refreshed(a)  # nothing is stored yet
    assert a.may_read(None, REPO) and a.is_linked(REPO, DIGEST)


def test_links_are_everyones_less_those_seen_leaving() -> None:
    records = MemoryRecords(shared=True)
    a, b, clock = two_processes(records)
    a.note_served(None, REPO, DIGEST)
    b.note_served(None, REPO, OTHER)
    clock.advance(1)
    assert records.documents["docker.io/library/alpine"]["links"] == [DIGEST, OTHER]
    a.forget_content(DIGEST)  # evicted from the shared cache
    clock.advance(1)
    assert records.documents["docker.io/library/alpine"]["links"] == [OTHER]
    assert not refreshed(b).is_linked(REPO, DIGEST) and b.is_linked(REPO, OTHER)


def test_a_store_that_fails_leaves_what_the_process_knows() -> None:
    class Down(MemoryRecords):
        def fetch(self, repository: str) -> Deferred[dict[str, Any] | None]:
            return fail(ConnectionError("redis is down"))

    access, _, _ = two_processes(Down(shared=True))
    access.note_served(None, REPO)
    assert refreshed(access).may_read(None, REPO)


def test_an_unshared_store_is_never_asked_and_keeps_no_refusals() -> None:
    class Unasked(MemoryRecords):
        def fetch(self, repository: str) -> Deferred[dict[str, Any] | None]:
            raise AssertionError("an unshared store is the process's own")

    records = Unasked()
    access, _, clock = two_processes(records)
    access.note_refused(None, REPO)
    clock.advance(1)
    refreshed(access)
    assert records.writes == 0 and records.documents == {}


def test_refusals_waiting_to_be_saved_are_bounded() -> None:
    records = MemoryRecords(shared=True)
    access, _, _ = two_processes(records)
    for n in range(25_000):
        access.note_refused(None, ("docker.io", f"spam/n{n}"))
    assert records.writes >= 20_000, "saved in batches before the timer"
    assert records.documents == {}, "a refusal of what nobody held public keeps nothing"


changes = st.lists(
    st.fixed_dictionaries(
        {
            "repository": st.just("docker.io/library/alpine"),
            "public": st.none() | st.integers(0, 20),
            "refused": st.none() | st.integers(0, 20),
            "links": st.lists(st.sampled_from([DIGEST, OTHER]), max_size=2),
        }
    ),
    max_size=4,
)


@given(changes)
def test_the_record_is_the_same_whatever_order_changes_arrive_in(batch: list[dict]) -> None:
    """Once a repository has a record. Before, a lone refusal is dropped: it revokes
    nothing, and keeping it would let anonymous clients fill the disk one made-up
    repository name at a time."""

    def fold(order: tuple[dict[str, Any], ...]) -> dict[str, Any] | None:
        record: dict[str, Any] | None = {"public": 0, "links": []}
        for change in order:
            record = merged(record, change)
        return record

    results = {repr(fold(order)) for order in itertools.permutations(batch)}
    assert len(results) == 1, results


def test_workers_share_records_through_the_cache_directory(store: FilesystemStore) -> None:
    """Two processes' Documents over one store: each update merges under the lock."""
    clock = Clock()
    clock.advance(1000)
    a, b = (
        AccessCache(clock, records=MetaRecords(Documents(store, sync_disk()), shared=True))
        for _ in range(2)
    )
    b.note_served(None, REPO, DIGEST)
    a.note_served(ALICE, REPO, OTHER)
    clock.advance(1)
    assert refreshed(a).may_read(None, REPO) and a.is_linked(REPO, DIGEST)
    a.note_refused(None, REPO)
    a.flush()
    assert not refreshed(b).may_read(None, REPO)
    assert b.is_linked(REPO, OTHER)


def test_a_pending_update_is_read_merged_with_the_disk(store: FilesystemStore) -> None:
    pool = ManualPool()
    documents = Documents(store, DiskWork(pool))
    store.write_meta("access/x", {"n": 1})
    documents.update_meta("access/x", lambda d: {"n": (d or {"n": 0})["n"] + 1})
    documents.update_meta("access/x", lambda d: {"n": (d or {"n": 0})["n"] * 10})
    assert documents.read_meta("access/x") == {"n": 20}, "not yet on disk, read as it will be"
    assert store.read_meta("access/x") == {"n": 1}
    assert pool.names() == ["update_meta"], "the two changes are one write"
    pool.complete_all()
    assert store.read_meta("access/x") == {"n": 20}


def test_concurrent_updates_lose_nothing(store: FilesystemStore) -> None:
    """Threads stand in for processes: the lock is a flock on an open file description."""

    def bump(document: Any) -> Any:
        return {"n": (document or {"n": 0})["n"] + 1}

    def worker() -> None:
        for _ in range(100):
            store.update_meta("access/count", bump)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.read_meta("access/count") == {"n": 400}
