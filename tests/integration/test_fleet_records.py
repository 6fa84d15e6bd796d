"""The fleet's access records (L{dockerproxy.fleet.records}) in a real redis-server: its Lua
merge applies changes as accessrecords.merged says, whatever order they come in."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from dockerproxy.accessrecords import merged
from dockerproxy.fleet.client import FleetClient, make_redis
from dockerproxy.fleet.records import FleetRecords
from tests.harness.redis import RedisServer

T = TypeVar("T")


class Inline:
    """Runs each Redis call at once, in the test's thread."""

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return maybeDeferred(f, *args)


class NoLocal:
    def load(self) -> list[dict[str, Any]]:
        return []

    def save(self, repository: str, change: dict[str, Any]) -> None:
        pass


def records(redis: RedisServer, prefix: str) -> FleetRecords:
    client = FleetClient(make_redis(redis.url, 2.0), Inline(), Clock(), prefix)
    return FleetRecords(client, NoLocal(), ttl=3600)


def fetched(store: FleetRecords, repository: str) -> dict[str, Any] | None:
    result: list[Any] = []
    store.fetch(repository).addBoth(result.append)
    assert result and not isinstance(result[0], BaseException), result
    return result[0]  # type: ignore[no-any-return]


def change(**fields: Any) -> dict[str, Any]:
    return {
        "repository": "r.test/app",
        "public": None,
        "refused": None,
        "links": [],
        "forgotten": [],
        **fields,
    }


CHANGES = [
    change(public=10.0, links=["sha256:a"]),
    change(refused=20.0),
    change(public=15.0, links=["sha256:b"]),
    change(forgotten=["sha256:a"]),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(CHANGES)))))
def test_the_record_is_what_merged_says_in_any_order(
    redis: RedisServer, order: tuple[int, ...]
) -> None:
    store = records(redis, f"p{''.join(map(str, order))}:")
    expected: dict[str, Any] | None = None
    for index in order:
        store.save("r.test/app", CHANGES[index])
        expected = merged(expected, CHANGES[index])
    got = fetched(store, "r.test/app")
    assert got is not None and expected is not None
    assert got == expected, order


def test_a_lone_refusal_is_not_kept_and_keys_expire(redis: RedisServer) -> None:
    store = records(redis, "lone:")
    store.save("r.test/app", change(refused=5.0))
    assert fetched(store, "r.test/app") is None
    assert redis.command("DBSIZE") == b":0"
    store.save("r.test/app", change(public=6.0, links=["sha256:a"]))
    assert redis.command("DBSIZE") == b":2"
    for key in ("access", "links"):
        name = next(k for k in _keys(redis) if f":{key}:" in k)
        ttl = int(redis.command("TTL", name)[1:])
        assert 0 < ttl <= 3600


def _keys(redis: RedisServer) -> list[str]:
    import redis as client

    return [k.decode() for k in client.Redis.from_url(redis.url).keys("*")]
