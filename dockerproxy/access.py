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
document per repository, so learning about one repository rewrites only its own;
processes sharing those records (workers, a fleet) merge their news into them
(L{dockerproxy.accessrecords}).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from dockerproxy.accessrecords import linked, merged, public_since
from dockerproxy.auth import is_anonymous
from dockerproxy.names import RepoKey

log = Logger()

MAX_GRANTS = 10_000
MAX_ANONYMOUS_TOKENS = 10_000


def credential_key(authorization: bytes | None) -> str:
    """A stable, non-reversible key for a credential (tokens are never stored)."""
    return hashlib.sha256(authorization or b"").hexdigest()


class RecordStore(Protocol):
    """Where per-repository records persist (see L{dockerproxy.accessrecords}).

    C{save} hands over a change (what this process knows of a repository, with
    the refusals and the unlinked content it saw since its last save), which the
    store merges into its record (L{dockerproxy.accessrecords.merged}). A
    C{shared} store is written by other processes too; L{AccessCache.refresh}
    then reads their news with C{fetch} before the cache decides.
    """

    shared: bool

    def load(self) -> Iterable[dict[str, Any]]: ...

    def save(self, repository: str, change: dict[str, Any]) -> None: ...

    def fetch(self, repository: str) -> Deferred[dict[str, Any] | None]: ...


class TokenMarks(Protocol):
    """Anonymous tokens other processes handed out (L{dockerproxy.cache.tokenmarks})."""

    def mark(self, key: str, expiry: float) -> None: ...

    def expiry(self, key: str) -> float | None: ...


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
        marks: TokenMarks | None = None,
    ) -> None:
        self.clock = clock
        self._marks = marks  # with workers: the anonymous tokens each one handed out
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
        # Since the last save, for a shared store: refusals and content that left.
        self._refused: dict[str, float] = {}
        self._forgotten: dict[str, set[str]] = {}

    @property
    def shared(self) -> bool:
        return self._records is not None and self._records.shared

    def load(self) -> None:
        """Read what an earlier run saved (at start: constructing reads no disk)."""
        for document in self._records.load() if self._records is not None else ():
            self._restore(document)

    async def refresh(self, repo: RepoKey) -> None:
        """Take in what other processes sharing the records learned of C{repo}, before
        the cache decides from them: above all a refusal, which must stop this one
        serving the repository from cache too. Nothing to do when unshared."""
        if self._records is None or not self._records.shared:
            return
        key = _repo(repo)
        try:
            record = await self._records.fetch(key)
        except Exception as e:  # the store's fault (Redis down): what this process knows stands
            log.debug("access: cannot fetch the record of {key}: {error}", key=key, error=e)
            return
        self._adopt(key, record)

    def note_anonymous_token(self, token: str, expires_in: float) -> None:
        """A token the proxy fetched for a client that sent no credentials."""
        now = self.clock.seconds()
        key = credential_key(b"Bearer " + token.encode())
        self._anonymous_tokens.put(key, now + expires_in, now)
        if self._marks is not None:
            self._marks.mark(key, now + expires_in)

    def is_anonymous(self, authorization: bytes | None) -> bool:
        if is_anonymous(authorization):
            return True
        key, now = credential_key(authorization), self.clock.seconds()
        if self._anonymous_tokens.alive(key, now):
            return True
        if self._marks is None or not authorization:
            return False
        expiry = self._marks.expiry(key)  # handed out by another worker?
        if expiry is None or expiry <= now:
            return False
        self._anonymous_tokens.put(key, expiry, now)
        return True

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
        """The upstream refused C{repo} to this credential: forget what allowed it.

        A shared store hears of every anonymous refusal, known public here or not:
        another process may hold the repository public.
        """
        self._grants.pop((credential_key(authorization), *repo))
        if not self.is_anonymous(authorization):
            return
        key = _repo(repo)
        if key in self._public:
            del self._public[key]
            self._changed(key)
        if self.shared:
            # Out at once, not after save_delay: until the others read it they may serve
            # the repository from cache to clients the upstream now refuses.
            self._refused[key] = self.clock.seconds()
            self._changed(key)
            self.flush()

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
            _discard(self._links, key, digest)
            if self.shared:
                self._forgotten.setdefault(key, set()).add(digest)
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
        if self._records is not None:
            for key in sorted(dirty):
                self._records.save(key, self._change(key))
        self._refused.clear()
        self._forgotten.clear()

    def _changed(self, key: str) -> None:
        """Write C{key}'s record soon: many links learned in one pull cost one write."""
        self._dirty.add(key)
        if self._records is not None and self._pending is None:
            self._pending = self.clock.callLater(self.save_delay, self.flush)

    def _change(self, key: str) -> dict[str, Any]:
        """What this process knows of C{key} for the store: public or not, links, and
        (shared) refusals and unlinked content since the last save; never credentials."""
        return {
            "repository": key,
            "public": self._public.get(key),
            "refused": self._refused.get(key),
            "links": sorted(self._links.get(key, ())),
            "forgotten": sorted(self._forgotten.get(key, ())),
        }

    def _restore(self, document: dict[str, Any]) -> None:
        key = document.get("repository")
        if not isinstance(key, str):
            return
        public = public_since(document, self.clock.seconds(), self.public_ttl)
        if public is not None:
            self._public[key] = public
        for digest in linked(document):
            self._link(key, digest)

    def _adopt(self, key: str, record: dict[str, Any] | None) -> None:
        """The shared C{record} of C{key} replaces what this process knew, but for what
        it learned and has not saved yet, which is merged as the store would."""
        if key in self._dirty:
            record = merged(record, self._change(key))
        public = public_since(record, self.clock.seconds(), self.public_ttl)
        if public is None:
            self._public.pop(key, None)
        else:
            self._public[key] = public
        links = linked(record)
        for digest in self._links.get(key, set()) - links:
            self._unlink(key, digest)
        for digest in links:
            self._link(key, digest)

    def _unlink(self, key: str, digest: str) -> None:
        _discard(self._links, key, digest)
        _discard(self._where, digest, key)

    def _link(self, key: str, digest: str) -> None:
        self._links.setdefault(key, set()).add(digest)
        self._where.setdefault(digest, set()).add(key)


def _repo(repo: RepoKey) -> str:
    return f"{repo[0]}/{repo[1]}"


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    """C{value} out of C{index[key]}, and the key out once its set is empty."""
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]
