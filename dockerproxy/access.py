"""Who may read cached content: learned from the upstream, never assumed.

Cached content of a repository is served only to a client the upstream would
serve. Two facts are learned as the proxy relays upstream answers:

- a repository is I{public} once the upstream served it to an anonymous client
  (no credentials, or a token the proxy fetched for an anonymous client); public
  repositories are served from cache to anyone, also while the upstream is down;
- a credential may read a repository for a short while after the upstream
  served it that repository (a cheap HEAD re-checks it after that).

Content is also linked to the repositories it was seen in, so a blob cached
through one repository is never served through another one on trust.

Everything here is bounded: grants and anonymous tokens (keyed by credentials a
client can rotate at will) are capped and expire; links go with the blobs the
cache evicts. Public repositories and links survive restarts as one small
document per repository, so learning about one repository rewrites only its own.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from dockerproxy.auth import is_anonymous
from dockerproxy.names import RepoKey

MAX_GRANTS = 10_000
MAX_ANONYMOUS_TOKENS = 10_000


def credential_key(authorization: bytes | None) -> str:
    """A stable, non-reversible key for a credential (tokens are never stored)."""
    return hashlib.sha256(authorization or b"").hexdigest()


class RecordStore(Protocol):
    """Where per-repository records persist (see L{MetaRecords})."""

    def load(self) -> Iterable[dict[str, Any]]: ...

    def save(self, repository: str, document: dict[str, Any] | None) -> None: ...


class _Expiring:
    """Keys with expiry times, at most C{limit}, the oldest dropped first.

    Insertion order is close to expiry order (one TTL for grants), so expired keys
    are pruned from the front as new ones arrive: no scan, no growth.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: OrderedDict[Any, float] = OrderedDict()

    def put(self, key: Any, expiry: float, now: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = expiry
        while self._entries:
            oldest, when = next(iter(self._entries.items()))
            if when > now and len(self._entries) <= self.limit:
                break
            del self._entries[oldest]

    def alive(self, key: Any, now: float) -> bool:
        expiry = self._entries.get(key)
        return expiry is not None and expiry > now

    def pop(self, key: Any) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class AccessCache:
    """Public repositories, recent grants per credential, and content links."""

    def __init__(
        self,
        clock: IReactorTime,
        grant_ttl: float = 60.0,
        public_ttl: float = 7 * 86400.0,
        records: RecordStore | None = None,
        save_delay: float = 1.0,
        max_grants: int = MAX_GRANTS,
        max_anonymous_tokens: int = MAX_ANONYMOUS_TOKENS,
    ) -> None:
        self.clock = clock
        self.save_delay = save_delay
        self.grant_ttl = grant_ttl
        self.public_ttl = public_ttl
        self._records = records
        self._anonymous_tokens = _Expiring(max_anonymous_tokens)
        self._grants = _Expiring(max_grants)
        self._public: dict[str, float] = {}
        self._links: dict[str, set[str]] = {}  # repository -> digests seen in it
        self._where: dict[str, set[str]] = {}  # digest -> repositories it is linked in
        self._dirty: set[str] = set()
        self._pending: IDelayedCall | None = None

    def load(self) -> None:
        """Read what an earlier run saved (at start: constructing reads no disk)."""
        for document in self._records.load() if self._records is not None else ():
            self._restore(document)

    def note_anonymous_token(self, token: str, expires_in: float) -> None:
        """A token the proxy fetched for a client that sent no credentials."""
        now = self.clock.seconds()
        key = credential_key(b"Bearer " + token.encode())
        self._anonymous_tokens.put(key, now + expires_in, now)

    def is_anonymous(self, authorization: bytes | None) -> bool:
        if is_anonymous(authorization):
            return True
        return self._anonymous_tokens.alive(credential_key(authorization), self.clock.seconds())

    def note_served(
        self, authorization: bytes | None, repo: RepoKey, digest: str | None = None
    ) -> None:
        """The upstream served C{repo} (and C{digest} in it) to this credential."""
        now = self.clock.seconds()
        key = _repo(repo)
        if self.is_anonymous(authorization):
            if key not in self._public:
                self._changed(key)
            self._public[key] = now
        else:
            self._grants.put((credential_key(authorization), *repo), now + self.grant_ttl, now)
        if digest is not None and digest not in self._links.get(key, ()):
            self._link(key, digest)
            self._changed(key)

    def note_refused(self, authorization: bytes | None, repo: RepoKey) -> None:
        """The upstream refused C{repo} to this credential: forget what allowed it."""
        self._grants.pop((credential_key(authorization), *repo))
        if self.is_anonymous(authorization) and _repo(repo) in self._public:
            del self._public[_repo(repo)]
            self._changed(_repo(repo))

    def may_read(self, authorization: bytes | None, repo: RepoKey) -> bool:
        """True when the cache may serve C{repo} to this credential without asking upstream."""
        now, key = self.clock.seconds(), _repo(repo)
        learned = self._public.get(key)
        if learned is not None:
            if learned + self.public_ttl > now:
                return True
            del self._public[key]  # aged out: the upstream is asked again
            self._changed(key)
        return self._grants.alive((credential_key(authorization), *repo), now)

    def is_linked(self, repo: RepoKey, digest: str) -> bool:
        return digest in self._links.get(_repo(repo), ())

    def forget_content(self, digest: str) -> None:
        """C{digest} left the cache (evicted): it is linked nowhere any more."""
        for key in self._where.pop(digest, ()):
            linked = self._links.get(key)
            if linked is not None:
                linked.discard(digest)
                if not linked:
                    del self._links[key]
            self._changed(key)

    def sizes(self) -> dict[str, int]:
        """How many of each record are held: every one of them is bounded."""
        return {
            "grants": len(self._grants),
            "anonymous_tokens": len(self._anonymous_tokens),
            "public": len(self._public),
            "repositories_linked": len(self._links),
            "digests_linked": len(self._where),
        }

    # ------------------------------------------------------------- persistence

    def flush(self) -> None:
        """Write what changed now (also at shutdown)."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        dirty, self._dirty = self._dirty, set()
        if self._records is None:
            return
        for key in sorted(dirty):
            self._records.save(key, self._document(key))

    def _changed(self, key: str) -> None:
        """Write C{key}'s record soon: many links learned in one pull cost one write."""
        self._dirty.add(key)
        if self._records is not None and self._pending is None:
            self._pending = self.clock.callLater(self.save_delay, self.flush)

    def _document(self, key: str) -> dict[str, Any] | None:
        """What survives a restart: public or not, and links (never credentials)."""
        public, links = self._public.get(key), self._links.get(key)
        if public is None and not links:
            return None
        return {"repository": key, "public": public, "links": sorted(links or ())}

    def _restore(self, document: dict[str, Any]) -> None:
        key = document.get("repository")
        if not isinstance(key, str):
            return
        public = document.get("public")
        if isinstance(public, int | float) and public + self.public_ttl > self.clock.seconds():
            self._public[key] = float(public)
        for digest in document.get("links") or ():
            if isinstance(digest, str):
                self._link(key, digest)

    def _link(self, key: str, digest: str) -> None:
        self._links.setdefault(key, set()).add(digest)
        self._where.setdefault(digest, set()).add(key)


def _repo(repo: RepoKey) -> str:
    return f"{repo[0]}/{repo[1]}"


class MetaRecords:
    """Per-repository records as small documents in the cache store's meta area
    (C{meta/access/<sha256 of the repository>.json}); C{documents} is a
    L{dockerproxy.cache.documents.Documents}, which writes them off the reactor."""

    PREFIX = "access"
    LEGACY = "access"  # the single snapshot older versions wrote (meta/access.json)

    def __init__(self, documents: Any) -> None:
        self.documents = documents

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

    def save(self, repository: str, document: dict[str, Any] | None) -> None:
        if document is None:
            self.documents.remove_meta(self._key(repository))
        else:
            self.documents.write_meta(self._key(repository), document)

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
