"""Access records as they persist: one document per repository, and how records merge.

A record says when the upstream last served the repository to an anonymous client
(C{public}), when it last refused one (C{refused}), and which content was seen in
it (C{links}). Several writers may share the records (workers on one cache
directory, instances on one Redis): each writes what it learned as a change that
L{merged} folds into the stored record, so no writer's news is lost, and the
record says the same whatever order the changes arrive in:

- the later of C{public} and C{refused} wins, so a refusal one writer learned is
  never undone by another writer's older news that the repository was public;
- links are the union of everyone's, less those a writer saw leave the cache.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred, succeed


def merged(stored: dict[str, Any] | None, change: dict[str, Any]) -> dict[str, Any] | None:
    """C{change} folded into the C{stored} record; C{None} when nothing is left to keep.

    A record with a refusal but no C{public} time revokes nothing and is dropped;
    one whose C{public} time is older than its refusal is kept, so a writer's
    delayed news of that older C{public} time cannot make it public again.
    """
    stored = stored if isinstance(stored, dict) else {}
    public = _latest(stored.get("public"), change.get("public"))
    refused = _latest(stored.get("refused"), change.get("refused"))
    links = (_strings(stored.get("links")) | _strings(change.get("links"))) - _strings(
        change.get("forgotten")
    )
    if public is None and not links:
        return None
    return {
        "repository": change["repository"],
        "public": public,
        "refused": refused,
        "links": sorted(links),
    }


def public_since(record: dict[str, Any] | None, now: float, ttl: float) -> float | None:
    """When the record's repository was last served anonymously, if that still holds."""
    if not isinstance(record, dict):
        return None
    public, refused = _time(record.get("public")), _time(record.get("refused"))
    if public is None or public + ttl <= now or (refused is not None and refused >= public):
        return None
    return public


def linked(record: dict[str, Any] | None) -> set[str]:
    return _strings(record.get("links")) if isinstance(record, dict) else set()


def _latest(a: Any, b: Any) -> float | None:
    times = [t for t in (_time(a), _time(b)) if t is not None]
    return max(times, default=None)


def _time(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _strings(values: Any) -> set[str]:
    if not isinstance(values, list | tuple | set | frozenset):
        return set()
    return {value for value in values if isinstance(value, str)}


class MetaRecords:
    """Per-repository records as small documents in the cache store's meta area
    (C{meta/access/<sha256 of the repository>.json}); C{documents} is a
    L{dockerproxy.cache.documents.Documents}, which writes them off the reactor.

    C{shared}: other processes (workers) write the same documents, so each change
    is merged into the document on disk under the store's update lock, and
    L{fetch} reads what they wrote.
    """

    PREFIX = "access"
    LEGACY = "access"  # the single snapshot older versions wrote (meta/access.json)

    def __init__(self, documents: Any, shared: bool = False) -> None:
        self.documents = documents
        self.shared = shared

    def load(self) -> list[dict[str, Any]]:
        """The saved records; at start, like the cache's scan, so in the reactor thread.

        A snapshot of an older version is split into per-repository documents
        written right here, synchronously, and only then removed: a crash in
        between leaves both, never neither.
        """
        documents = [
            doc for _, doc in self.documents.list_meta(self.PREFIX) if isinstance(doc, dict)
        ]
        legacy = self.documents.read_meta(self.LEGACY)
        if isinstance(legacy, dict):
            store = self.documents.store
            documents += self._from_legacy(legacy)
            for document in documents:
                store.write_meta(self._key(document["repository"]), document)
            store.remove_meta(self.LEGACY)
        return documents

    def save(self, repository: str, change: dict[str, Any]) -> None:
        key = self._key(repository)
        if self.shared:
            self.documents.update_meta(key, lambda stored: merged(stored, change))
            return
        record = merged(None, change)  # the only writer: its record is the whole truth
        if record is None:
            self.documents.remove_meta(key)
        else:
            self.documents.write_meta(key, record)

    def fetch(self, repository: str) -> Deferred[dict[str, Any] | None]:
        """The newest record, as this process or another one wrote it (a small read)."""
        document = self.documents.read_meta(self._key(repository))
        return succeed(document if isinstance(document, dict) else None)

    def _key(self, repository: str) -> str:
        return f"{self.PREFIX}/{hashlib.sha256(repository.encode()).hexdigest()}"

    @staticmethod
    def _from_legacy(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
        public = snapshot.get("public") or {}
        links = snapshot.get("links") or {}
        if not isinstance(public, dict) or not isinstance(links, dict):
            return []
        return [
            {"repository": key, "public": public.get(key), "links": links.get(key) or []}
            for key in sorted(set(public) | set(links))
            if isinstance(key, str)
        ]
