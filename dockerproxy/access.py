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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from dockerproxy.auth import is_anonymous

RepoKey = tuple[str, str]  # (upstream name, upstream repository)


def credential_key(authorization: bytes | None) -> str:
    """A stable, non-reversible key for a credential (tokens are never stored)."""
    return hashlib.sha256(authorization or b"").hexdigest()


class AccessCache:
    """Public repositories, recent grants per credential, and content links."""

    def __init__(self, clock: IReactorTime, grant_ttl: float = 60.0,
                 public_ttl: float = 7 * 86400.0,
                 save: Callable[[dict[str, Any]], None] | None = None,
                 saved: dict[str, Any] | None = None, save_delay: float = 1.0) -> None:
        self.clock = clock
        self.save_delay = save_delay
        self.grant_ttl = grant_ttl
        self.public_ttl = public_ttl
        self._save = save
        self._anonymous_tokens: dict[str, float] = {}
        self._grants: dict[tuple[str, str, str], float] = {}
        self._public: dict[str, float] = {}
        self._links: dict[str, set[str]] = {}
        self._pending: IDelayedCall | None = None
        if saved:
            self._public = {k: float(v) for k, v in saved.get("public", {}).items()}
            self._links = {k: set(v) for k, v in saved.get("links", {}).items()}

    def note_anonymous_token(self, token: str, expires_in: float) -> None:
        """A token the proxy fetched for a client that sent no credentials."""
        now = self.clock.seconds()
        self._anonymous_tokens = {k: t for k, t in self._anonymous_tokens.items() if t > now}
        self._anonymous_tokens[credential_key(b"Bearer " + token.encode())] = now + expires_in

    def is_anonymous(self, authorization: bytes | None) -> bool:
        if is_anonymous(authorization):
            return True
        expiry = self._anonymous_tokens.get(credential_key(authorization))
        return expiry is not None and expiry > self.clock.seconds()

    def note_served(self, authorization: bytes | None, repo: RepoKey,
                    digest: str | None = None) -> None:
        """The upstream served C{repo} (and C{digest} in it) to this credential."""
        now = self.clock.seconds()
        key = _repo(repo)
        changed = False
        if self.is_anonymous(authorization):
            changed = key not in self._public
            self._public[key] = now
        else:
            self._grants[(credential_key(authorization), *repo)] = now + self.grant_ttl
        if digest is not None:
            linked = self._links.setdefault(key, set())
            changed = changed or digest not in linked
            linked.add(digest)
        if changed:
            self.save()

    def note_refused(self, authorization: bytes | None, repo: RepoKey) -> None:
        """The upstream refused C{repo} to this credential: forget what allowed it."""
        self._grants.pop((credential_key(authorization), *repo), None)
        if self.is_anonymous(authorization) and self._public.pop(_repo(repo), None):
            self.save()

    def may_read(self, authorization: bytes | None, repo: RepoKey) -> bool:
        """True when the cache may serve C{repo} to this credential without asking upstream."""
        now = self.clock.seconds()
        learned = self._public.get(_repo(repo))
        if learned is not None and learned + self.public_ttl > now:
            return True
        expiry = self._grants.get((credential_key(authorization), *repo))
        return expiry is not None and expiry > now

    def is_linked(self, repo: RepoKey, digest: str) -> bool:
        return digest in self._links.get(_repo(repo), ())

    def unlink(self, digest: str) -> None:
        """C{digest} left the cache (evicted): forget which repositories it was seen in."""
        changed = False
        for linked in self._links.values():
            if digest in linked:
                linked.discard(digest)
                changed = True
        if changed:
            self.save()

    def snapshot(self) -> dict[str, Any]:
        """What survives a restart: public repositories and links (never credentials)."""
        return {"public": dict(self._public),
                "links": {k: sorted(v) for k, v in self._links.items()}}

    def save(self) -> None:
        """Write the snapshot soon: many links learned in one pull cost one write."""
        if self._save is not None and self._pending is None:
            self._pending = self.clock.callLater(self.save_delay, self.flush)

    def flush(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._save is not None:
            self._save(self.snapshot())


def _repo(repo: RepoKey) -> str:
    return f"{repo[0]}/{repo[1]}"
