"""Answers of the search index, kept a few minutes: an LRU bounded in entries and bytes.

C{docker search} asks the same few terms again and again; the index's answers are
public (the proxy asks anonymously), so one answer serves every client for its TTL.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from twisted.internet.interfaces import IReactorTime

TTL = 300.0
MAX_ENTRIES = 1000
MAX_BYTES = 16 * 1024 * 1024


class AnswerCache:
    """Bodies by key until C{ttl} seconds after they were stored; the least recently
    used go first past C{max_entries} entries or C{max_bytes} bytes in all."""

    def __init__(
        self,
        clock: IReactorTime,
        ttl: float = TTL,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, body = entry
        if self.clock.seconds() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return body

    def put(self, key: Hashable, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self.clock.seconds() + self.ttl, body)
        self.size += len(body)
        while len(self._entries) > self.max_entries or self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        _, body = self._entries.pop(key)
        self.size -= len(body)
