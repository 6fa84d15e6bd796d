"""An in-memory stand-in for the few redis-py calls the fleet makes, with expiry on a
test's clock; C{fail} makes every call raise (Redis down). The real redis-server is in
tests/integration/test_fleet.py."""

from __future__ import annotations

from typing import Any

import redis
from twisted.internet.task import Clock

from dockerproxy.fleet.locks import RELEASE, RENEW


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

    def eval(self, script: str, numkeys: int, key: str, token: str, *args: Any) -> int:
        self._call("eval")
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

    def close(self) -> None:
        pass


def down() -> Exception:
    """What redis-py raises when nothing listens."""
    return redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
