"""AccessCache: who may read cached content, learned from upstream answers."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from dockerproxy.access import AccessCache

REPO = ("docker.io", "library/alpine")
PRIVATE = ("docker.io", "private/secret")
ALICE = b"Bearer alice-token"
BOB = b"Bearer bob-token"
DIGEST = "sha256:" + "a" * 64


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
    saved: list[dict[str, Any]] = []
    access, clock = make(save=saved.append)
    access.note_served(None, REPO, DIGEST)
    access.note_served(ALICE, PRIVATE, DIGEST)
    assert saved == [], "writes are batched"
    clock.advance(1)
    assert len(saved) == 1
    assert "alice" not in repr(saved[0])
    restarted, _ = make(saved=saved[-1])
    assert restarted.may_read(None, REPO)
    assert restarted.is_linked(PRIVATE, DIGEST)
    assert not restarted.may_read(ALICE, PRIVATE)


def test_public_knowledge_ages_out() -> None:
    access, clock = make(public_ttl=100)
    access.note_served(None, REPO)
    clock.advance(101)
    assert not access.may_read(None, REPO)


def test_unlink_forgets_a_digest_in_every_repository_and_saves() -> None:
    saved: list[dict[str, Any]] = []
    access, clock = make(save=saved.append)
    other = "sha256:" + "b" * 64
    access.note_served(None, REPO, DIGEST)
    access.note_served(ALICE, PRIVATE, DIGEST)
    access.note_served(ALICE, PRIVATE, other)
    clock.advance(1)
    access.unlink(DIGEST)
    assert not access.is_linked(REPO, DIGEST)
    assert not access.is_linked(PRIVATE, DIGEST)
    assert access.is_linked(PRIVATE, other)
    assert access.may_read(None, REPO), "only the content link goes"
    clock.advance(1)
    assert saved[-1]["links"] == {"docker.io/library/alpine": [], "docker.io/private/secret":
                                  [other]}
    writes = len(saved)
    access.unlink(DIGEST)
    clock.advance(1)
    assert len(saved) == writes, "nothing changed, nothing written"
