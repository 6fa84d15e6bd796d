"""Tags through the mirror: served from cache for a while, then revalidated, or stale.

A tag points at a manifest digest (one per media type: an index and a single
manifest may share a tag). It is served from cache for C{ttl} seconds after the
upstream last named it, then a HEAD (free on Docker Hub) revalidates it, and the
manifest is fetched again only when the digest changed. While the upstream is
down, times out or answers 5xx or 429, a cached tag is served anyway, with a
C{Warning}, for up to C{stale_max_age}.

A tag is served only in a media type the client's Accept names: an index is
never served by tag to a client that accepts only single manifests.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from dockerproxy import errors
from dockerproxy.cache.manifests import CachedManifest, ManifestStore, TagEntry
from dockerproxy.digests import parse_or_none
from dockerproxy.edge import client_request
from dockerproxy.mirror.manifests import Check, ManifestProxy, named_digest
from dockerproxy.mirror.remote import CONDITIONS, Remote
from dockerproxy.mirror.responses import HIT, MISS, REVALIDATED, STALE, send_manifest
from dockerproxy.pull import Pull
from dockerproxy.relay import discard

log = Logger()


def accepted_types(merged: bytes | None) -> frozenset[str]:
    """The media types of a (merged) Accept value, parameters (q=) dropped."""
    if merged is None:
        return frozenset()
    return frozenset(v.split(b";")[0].strip().decode("latin-1").lower() for v in merged.split(b","))


def acceptable(media_type: str, accept: frozenset[str]) -> bool:
    """A client that names no types gets nothing from the cache: the upstream decides."""
    return media_type.lower() in accept or "*/*" in accept


class TagProxy:
    """Tags from the local C{store} while fresh (or stale and the upstream failing); the
    manifests they name come and go through C{manifests}."""

    def __init__(
        self,
        store: ManifestStore,
        manifests: ManifestProxy,
        remote: Remote,
        clock: IReactorTime,
        ttl: float,
        stale_max_age: float,
    ) -> None:
        self.store = store
        self.manifests = manifests
        self.remote = remote
        self.clock = clock
        self.ttl = ttl
        self.stale_max_age = stale_max_age

    def entry(self, pull: Pull, tag: str) -> TagEntry | None:
        """The most recently checked entry for C{tag} whose media type the client accepts."""
        accept = accepted_types(client_request(pull.request).accept)
        usable = [
            e for e in self.store.tag_entries(pull.repo, tag) if acceptable(e.media_type, accept)
        ]
        return max(usable, key=lambda e: e.checked, default=None)

    async def serve(self, pull: Pull, tag: str) -> None:
        entry = self.entry(pull, tag)
        cached = self.store.get(entry.digest) if entry is not None else None
        if entry is not None and cached is not None:
            if await self.remote.may_read(pull):
                age = self.clock.seconds() - entry.checked
                if age < self.ttl:
                    send_manifest(pull.request, cached, HIT)
                    return
                if await self._revalidated(pull, tag, cached, age):
                    return
            else:
                check = await self.manifests.check(pull, cached)
                if check is Check.REFUSED:
                    return
                if check is Check.CONFIRMED:
                    self._confirmed(pull, tag, cached)
                    send_manifest(pull.request, cached, REVALIDATED)
                    return
        manifest = await self.manifests.fetch(
            pull, remember=lambda headers: self._remember_head(pull, tag, headers)
        )
        if manifest is not None:
            self._confirmed(pull, tag, manifest)
            send_manifest(pull.request, manifest, MISS)

    async def _revalidated(self, pull: Pull, tag: str, cached: CachedManifest, age: float) -> bool:
        """HEAD the tag upstream: True when the cached manifest was answered (fresh or stale)."""
        try:
            check = await self.remote.fetch(pull, method=b"HEAD", drop=CONDITIONS)
        except errors.RegistryError as e:
            if e.status in (502, 504):
                return self._serve_stale(pull, tag, cached, age, e.message)
            raise
        code = check.response.code
        named = named_digest(check.response.headers)
        await discard(check.response)
        if code == 200 and named == str(cached.digest):
            self._confirmed(pull, tag, cached)
            send_manifest(pull.request, cached, REVALIDATED)
            return True
        if code == 429 or code >= 500:
            return self._serve_stale(pull, tag, cached, age, f"upstream answered {code}")
        return False

    def _serve_stale(
        self, pull: Pull, tag: str, cached: CachedManifest, age: float, why: str
    ) -> bool:
        if age >= self.stale_max_age:
            return False
        log.warn(
            "serving {repository}:{tag} from cache, {age:.0f}s old: {why}",
            repository="/".join(pull.repo),
            tag=tag,
            age=age,
            why=why,
        )
        send_manifest(pull.request, cached, STALE)
        return True

    def _confirmed(self, pull: Pull, tag: str, manifest: CachedManifest) -> None:
        """The upstream named C{manifest} for C{tag} just now: its TTL starts again."""
        self.store.set_tag(
            pull.repo, tag, TagEntry(manifest.digest, manifest.media_type, self.clock.seconds())
        )

    def _remember_head(self, pull: Pull, tag: str, headers: Headers) -> None:
        """A HEAD by tag names its digest: containerd's next pull of the tag needs no upstream."""
        digest = parse_or_none(named_digest(headers))
        media_type = (headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
        if digest is not None and media_type:
            self.store.set_tag(
                pull.repo,
                tag,
                TagEntry(digest, media_type.split(";")[0].strip(), self.clock.seconds()),
            )
