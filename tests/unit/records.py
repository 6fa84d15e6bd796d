"""A RecordStore for AccessCache tests: records in a dict, shared or not."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from dockerproxy.accessrecords import merged


class MemoryRecords:
    """A RecordStore in a dict, counting writes; C{shared} as several processes' would be."""

    def __init__(self, shared: bool = False) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self.shared = shared

    def load(self) -> list[dict[str, Any]]:
        return list(self.documents.values())

    def save(self, repository: str, change: dict[str, Any]) -> None:
        self.writes += 1
        stored = self.documents.get(repository) if self.shared else None
        document = merged(stored, change)
        if document is None:
            self.documents.pop(repository, None)
        else:
            self.documents[repository] = document

    def fetch(self, repository: str) -> Deferred[dict[str, Any] | None]:
        return succeed(self.documents.get(repository))
