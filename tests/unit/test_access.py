"""AccessCache: who may read cached content, learned from upstream answers."""

from __future__ import annotations

import shutil
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from dockerproxy.access import AccessCache
from dockerproxy.accessrecords import MetaRecords
from dockerproxy.cache.documents import Documents
from dockerproxy.cache.store import FilesystemStore
from tests.unit.fakes import sync_disk
from tests.unit.records import MemoryRecords

REPO = ("docker.io", "library/alpine")
PRIVATE = ("docker.io", "private/secret")
ALICE = b"Bearer alice-token"
BOB = b"Bearer bob-token"
DIGEST = "sha256:" + "a" * 64


_scratch: list[Path] = []


def scratch_path() -> Path:
    path = Path(tempfile.mkdtemp(prefix="dockerproxy-test-"))
    _scratch.append(path)
    return path


@pytest.fixture(autouse=True)
def _remove_scratch() -> Any:
    yield
    while _scratch:
        shutil.rmtree(_scratch.pop(), ignore_errors=True)


def make(**kwargs: Any) -> tuple[AccessCache, Clock]:
    clock = Clock()
    return AccessCache(clock, **kwargs), clock


def test_nothing_is_readable_before_the_upstream_served_it() -> None:
    access, _ = make()
    assert not access.may_read(None, REPO)
    assert not access.may_read(ALICE, REPO)


def test_anonymous_success_makes_a_repository_public() -> None:
    access, _ = make()
    access.note_served(None, REPO)
    assert access.may_read(None, REPO)
    assert access.may_read(BOB, REPO)
    assert not access.may_read(None, PRIVATE)


def test_empty_basic_credentials_count_as_anonymous() -> None:
    access, _ = make()
    access.note_served(b"Basic Og==", REPO)
    assert access.may_read(BOB, REPO)


def test_tokens_fetched_for_anonymous_clients_count_as_anonymous() -> None:
    access, clock = make()
    access.note_anonymous_token("anon", expires_in=300)
    access.note_served(b"Bearer anon", REPO)
    assert access.may_read(None, REPO)
    clock.advance(301)
    access.note_served(b"Bearer anon", PRIVATE)
    assert not access.may_read(None, PRIVATE), "an expired anonymous token is a credential"


def test_a_credentials_grant_is_its_own_and_expires() -> None:
    access, clock = make(grant_ttl=60)
    access.note_served(ALICE, PRIVATE)
    assert access.may_read(ALICE, PRIVATE)
    assert not access.may_read(BOB, PRIVATE)
    assert not access.may_read(None, PRIVATE)
    clock.advance(61)
    assert not access.may_read(ALICE, PRIVATE)


def test_a_refusal_revokes() -> None:
    access, _ = make()
    access.note_served(None, REPO)
    access.note_served(ALICE, PRIVATE)
    access.note_refused(None, REPO)
    access.note_refused(ALICE, PRIVATE)
    assert not access.may_read(BOB, REPO)
    assert not access.may_read(ALICE, PRIVATE)


def test_links_are_per_repository() -> None:
    access, _ = make()
    access.note_served(ALICE, PRIVATE, DIGEST)
    assert access.is_linked(PRIVATE, DIGEST)
    assert not access.is_linked(REPO, DIGEST)


def test_public_repositories_and_links_survive_a_restart_but_grants_do_not() -> None:
    records = MemoryRecords()
    access, clock = make(records=records)
    access.note_served(None, REPO, DIGEST)
    access.note_served(ALICE, PRIVATE, DIGEST)
    assert records.writes == 0, "writes are batched"
    clock.advance(1)
    assert records.writes == 2, "one record per repository"
    assert "alice" not in repr(records.documents)
    restarted, _ = make(records=records)
    assert not restarted.may_read(None, REPO), "constructing reads nothing"
    restarted.load()
    assert restarted.may_read(None, REPO)
    assert restarted.is_linked(PRIVATE, DIGEST)
    assert not restarted.may_read(ALICE, PRIVATE)


def test_a_change_rewrites_only_its_own_repository() -> None:
    records = MemoryRecords()
    access, clock = make(records=records)
    for n in range(50):
        access.note_served(None, ("docker.io", f"library/r{n}"), DIGEST)
    clock.advance(1)
    writes = records.writes
    access.note_served(None, REPO, "sha256:" + "b" * 64)
    clock.advance(1)
    assert records.writes == writes + 1


def test_evicted_content_is_linked_nowhere_and_its_records_shrink() -> None:
    records = MemoryRecords()
    access, clock = make(records=records)
    access.note_served(ALICE, PRIVATE, DIGEST)
    access.note_served(None, REPO, DIGEST)
    clock.advance(1)
    access.forget_content(DIGEST)
    assert not access.is_linked(PRIVATE, DIGEST) and not access.is_linked(REPO, DIGEST)
    clock.advance(1)
    assert set(records.documents) == {"docker.io/library/alpine"}, "private had only a link"
    assert access.sizes()["digests_linked"] == 0


def test_a_hundred_thousand_distinct_tokens_keep_memory_flat() -> None:
    """Grants are keyed by credentials a client can rotate at will: they are capped."""

    def spend(start: int, count: int) -> None:
        for n in range(start, start + count):
            access.note_served(b"Bearer token-%d" % n, PRIVATE)
            access.note_anonymous_token(f"anonymous-{n}", 300)

    tracemalloc.start()
    try:
        access, _ = make(max_grants=1000, max_anonymous_tokens=1000)
        spend(0, 10_000)
        before = tracemalloc.get_traced_memory()[0]
        spend(10_000, 90_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert access.sizes()["grants"] <= 1000 and access.sizes()["anonymous_tokens"] <= 1000
    assert grown < 256 * 1024, grown
    assert access.may_read(b"Bearer token-99999", PRIVATE), "the newest grants are kept"


def test_expired_grants_are_dropped_as_new_ones_arrive() -> None:
    access, clock = make(grant_ttl=60)
    for n in range(100):
        access.note_served(b"Bearer t%d" % n, PRIVATE)
    clock.advance(61)
    access.note_served(b"Bearer fresh", PRIVATE)
    assert access.sizes()["grants"] == 1


def test_records_of_older_versions_are_migrated() -> None:
    store = FilesystemStore(scratch_path())
    store.create()
    store.write_meta(
        "access",
        {
            "public": {"docker.io/library/alpine": 5.0},
            "links": {"docker.io/private/secret": [DIGEST]},
        },
    )
    clock = Clock()
    clock.advance(10)
    access = AccessCache(clock, records=MetaRecords(Documents(store, sync_disk())))
    access.load()
    assert access.may_read(None, REPO) and access.is_linked(PRIVATE, DIGEST)
    assert store.read_meta("access") is None
    again = AccessCache(clock, records=MetaRecords(Documents(store, sync_disk())))
    again.load()
    assert again.may_read(None, REPO) and again.is_linked(PRIVATE, DIGEST)


def test_public_knowledge_ages_out() -> None:
    access, clock = make(public_ttl=100)
    access.note_served(None, REPO)
    clock.advance(101)
    assert not access.may_read(None, REPO)


def test_forgetting_content_unlinks_it_in_every_repository_and_saves() -> None:
    records = MemoryRecords()
    access, clock = make(records=records)
    other = "sha256:" + "b" * 64
    access.note_served(None, REPO, DIGEST)
    access.note_served(ALICE, PRIVATE, DIGEST)
    access.note_served(ALICE, PRIVATE, other)
    clock.advance(1)
    access.forget_content(DIGEST)
    assert not access.is_linked(REPO, DIGEST)
    assert not access.is_linked(PRIVATE, DIGEST)
    assert access.is_linked(PRIVATE, other)
    assert access.may_read(None, REPO), "only the content link goes"
    clock.advance(1)
    assert records.documents["docker.io/library/alpine"]["links"] == []
    assert records.documents["docker.io/private/secret"]["links"] == [other]
    writes = records.writes
    access.forget_content(DIGEST)
    clock.advance(1)
    assert records.writes == writes, "nothing changed, nothing written"
