"""An in-memory stand-in for the few redis-py calls the fleet makes, with expiry on a
test's clock; C{fail} makes every call raise (Redis down). The real redis-server is in
tests/integration/test_fleet.py."""

from __future__ import annotations

import json
from typing import Any

import redis
from twisted.internet.task import Clock

from dockerproxy.accessrecords import merged
from dockerproxy.fleet.locks import RELEASE, RENEW
from dockerproxy.fleet.records import MERGE


class FakeRedis:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data: dict[str, Any] = {}
        self.expiry: dict[str, float] = {}
        self.fail: Exception | None = None
        self.calls: list[str] = []

    def _live(self, key: str) -> Any:
        when = self.expiry.get(key)
        if when is not None and when <= self.clock.seconds():
            self.data.pop(key, None)
            self.expiry.pop(key, None)
        return self.data.get(key)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.fail is not None:
            raise self.fail

    @staticmethod
    def _bytes(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    def get(self, key: str) -> bytes | None:
        self._call("get")
        return self._live(key)

    def set(
        self, key: str, value: Any, ex: int | None = None, px: int | None = None, nx: bool = False
    ) -> bool | None:
        self._call("set")
        if nx and self._live(key) is not None:
            return None
        self.data[key] = self._bytes(value)
        self.expiry.pop(key, None)
        if ex is not None:
            self.expiry[key] = self.clock.seconds() + ex
        if px is not None:
            self.expiry[key] = self.clock.seconds() + px / 1000
        return True

    def exists(self, key: str) -> int:
        self._call("exists")
        return int(self._live(key) is not None)

    def delete(self, key: str) -> int:
        self._call("delete")
        self.expiry.pop(key, None)
        return int(self.data.pop(key, None) is not None)

    def expire(self, key: str, seconds: int) -> bool:
        self._call("expire")
        if self._live(key) is None:
            return False
        self.expiry[key] = self.clock.seconds() + seconds
        return True

    def hset(self, key: str, field: str, value: Any) -> int:
        self._call("hset")
        table = self._live(key)
        if table is None:
            table = self.data[key] = {}
        new = field.encode() not in table
        table[field.encode()] = self._bytes(value)
        return int(new)

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        self._call("hgetall")
        return dict(self._live(key) or {})

    def hlen(self, key: str) -> int:
        self._call("hlen")
        return len(self._live(key) or {})

    def hexists(self, key: str, field: str) -> bool:
        self._call("hexists")
        return field.encode() in (self._live(key) or {})

    def smembers(self, key: str) -> set[bytes]:
        self._call("smembers")
        return set(self._live(key) or ())

    def eval(self, script: str, numkeys: int, key: str, token: str, *args: Any) -> int:
        self._call("eval")
        if script == MERGE:
            return self._merge(key, token, *args)
        if self._live(key) != token.encode():
            return 0
        if script == RENEW:
            self.expiry[key] = self.clock.seconds() + int(args[0]) / 1000
            return 1
        if script == RELEASE:
            del self.data[key]
            self.expiry.pop(key, None)
            return 1
        raise AssertionError(f"unknown script {script!r}")

    def _merge(self, record_key: str, links_key: str, *args: str) -> int:
        """The records' Lua script, as accessrecords.merged says it must behave (its
        bound on links aside)."""
        repository, public, refused, ttl, _, links, forgotten = args
        fields = self._live(record_key) or {}
        stored = {
            "public": float(fields[b"public"]) if b"public" in fields else None,
            "refused": float(fields[b"refused"]) if b"refused" in fields else None,
            "links": [m.decode() for m in self._live(links_key) or ()],
        }
        change = {
            "repository": repository,
            "public": float(public) if public else None,
            "refused": float(refused) if refused else None,
            "links": json.loads(links),
            "forgotten": json.loads(forgotten),
        }
        record = merged(stored, change)
        for key in (record_key, links_key):
            self.data.pop(key, None)
            self.expiry.pop(key, None)
        if record is None:
            return 0
        self.data[record_key] = {b"repository": repository.encode()}
        for name in ("public", "refused"):
            if record[name] is not None:
                self.data[record_key][name.encode()] = repr(record[name]).encode()
        if record["links"]:
            self.data[links_key] = {link.encode() for link in record["links"]}
        for key in (record_key, links_key):
            self.expiry[key] = self.clock.seconds() + int(ttl)
        return 1

    def close(self) -> None:
        pass


def down() -> Exception:
    """What redis-py raises when nothing listens."""
    return redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
