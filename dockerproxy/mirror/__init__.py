"""The pull-through cache in front of the upstream exchange.

Blobs and manifests by digest are immutable and cached for good (blobs in the
L{BlobCache}, manifests as their exact bytes with their media type); tags point
at a manifest digest for C{tag_ttl} seconds, then are revalidated with a HEAD
(free on Docker Hub) and re-fetched only when the digest changed. When the
upstream fails, a cached tag is served stale for up to C{stale_max_age}.

Nothing is served from the cache to a client the upstream would refuse: see
L{dockerproxy.access}. Content a client may not be served from cache goes
upstream as usual, and the upstream decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.web.http_headers import Headers

from dockerproxy import digests, errors
from dockerproxy.access import AccessCache
from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.manifests import CachedManifest, ManifestStore, TagEntry
from dockerproxy.cache.store import STATS_KEY, FilesystemStore
from dockerproxy.edge import client_request
from dockerproxy.exchange import Proxy
from dockerproxy.mirror.blobs import BlobProxy
from dockerproxy.mirror.remote import CONDITIONS as FILL_DROPS
from dockerproxy.mirror.remote import Remote
from dockerproxy.mirror.responses import send_manifest
from dockerproxy.mirror.s3 import S3Blobs
from dockerproxy.names import RepoKey
from dockerproxy.pull import Pull
from dockerproxy.relay import discard
from dockerproxy.upstream import Fetched

if TYPE_CHECKING:
    from dockerproxy.cache.s3 import S3BlobStore

log = Logger()

# The distribution spec lets registries refuse manifests over 4 MiB.
MAX_MANIFEST = 4 * 1024 * 1024


def accepted_types(merged: bytes | None) -> frozenset[str]:
    """The media types of a (merged) Accept value, parameters (q=) dropped."""
    if merged is None:
        return frozenset()
    return frozenset(v.split(b";")[0].strip().decode("latin-1").lower()
                     for v in merged.split(b","))


def acceptable(media_type: str, accept: frozenset[str]) -> bool:
    """A client that names no types gets nothing from the cache: the upstream decides."""
    return media_type.lower() in accept or "*/*" in accept


class Mirror:
    """Serves manifests and blobs from the cache when allowed, filling it on misses.

    C{exchange} is the upstream side: every miss and every check goes through it;
    C{s3} adds the blob tier shared with other instances.
    """

    def __init__(self, blobs: BlobCache, store: FilesystemStore, access: AccessCache,
                 exchange: Proxy, tag_ttl: float, stale_max_age: float,
                 s3: S3BlobStore | None = None) -> None:
        self.blobs = blobs
        self.store = store
        self.access = access
        self.exchange = exchange
        self.remote = Remote(exchange, access)
        # A blob that leaves the cache takes its content links with it.
        blobs.on_removed = lambda digest: access.forget_content(str(digest))
        self.s3 = None if s3 is None else S3Blobs(s3, blobs, store, self.remote,
                                                  redirect=s3.config.redirect)
        self.blob_proxy = BlobProxy(blobs, self.remote,
                                    tiers=() if self.s3 is None else (self.s3,),
                                    after_fill=None if self.s3 is None else self.s3.upload)
        self.manifests = ManifestStore(store)
        self.clock = exchange.clock
        self.tag_ttl = tag_ttl
        self.stale_max_age = stale_max_age

    async def serve(self, pull: Pull) -> None:
        if pull.kind == "blobs" and pull.digest is not None:
            await self.blob_proxy.serve(pull, pull.digest)
        elif pull.kind == "manifests" and pull.reference is not None:
            await self.manifest(pull, pull.reference)
        else:
            await self.remote.relay_fresh(pull)

    async def _fetch(self, pull: Pull, method: bytes | None = None,
                     drop: tuple[bytes, ...] = ()) -> Fetched:
        return await self.remote.fetch(pull, method, drop)

    async def _relay(self, pull: Pull, fetched: Fetched) -> None:
        await self.remote.relay(pull, fetched)

    # -------------------------------------------------------------- manifests

    async def manifest(self, pull: Pull, reference: str) -> None:
        request, repo, authorization = pull.request, pull.repo, pull.authorization
        accept = accepted_types(client_request(request).accept)
        digest = pull.digest
        if ":" in reference and digest is None:
            # Bytes the proxy cannot check against their digest are never cached.
            await self._relay(pull, await self._fetch(pull))
            return
        entry: TagEntry | None = None
        if digest is not None:
            cached = self.manifests.get(digest)
            usable = (cached is not None and acceptable(cached.media_type, accept)
                      and self.access.is_linked(repo, str(digest)))
        else:
            entry = max((e for e in self.manifests.tag_entries(repo, reference)
                         if acceptable(e.media_type, accept)),
                        key=lambda e: e.checked, default=None)
            cached = self.manifests.get(entry.digest) if entry is not None else None
            usable = cached is not None
        if cached is not None and usable and self.access.may_read(authorization, repo):
            age = 0.0 if entry is None else self.clock.seconds() - entry.checked
            if age < self.tag_ttl:
                send_manifest(request, cached, "hit")
                return
            if await self._revalidated(pull, reference, cached, age):
                return
        elif cached is not None and usable:
            if await self._access_checked(pull, reference, cached):
                return
        await self._manifest_from_upstream(pull, reference)

    async def _access_checked(self, pull: Pull, reference: str,
                              cached: CachedManifest) -> bool:
        """Cached, but not yet known to be readable by this client: a HEAD asks the upstream
        (free on Docker Hub, where a GET counts against the rate limit), as for blobs.

        True when answered: from the cache if the upstream names the cached digest, or with
        the upstream's refusal. Anything else is left to a GET.
        """
        check = await self._fetch(pull, method=b"HEAD", drop=FILL_DROPS)
        code = check.response.code
        if code in (401, 403):
            self._note_refusal(code, pull)
            await self._relay(pull, check)
            return True
        digest = (check.response.headers.getRawHeaders(b"docker-content-digest") or [b""])[0]
        await discard(check.response)
        if code != 200 or digest.decode("latin-1") != str(cached.digest):
            return False
        self.access.note_served(pull.authorization, pull.repo, str(cached.digest))
        if ":" not in reference:
            self.manifests.set_tag(pull.repo, reference, TagEntry(
                cached.digest, cached.media_type, self.clock.seconds()))
        send_manifest(pull.request, cached, "revalidated")
        return True

    async def _revalidated(self, pull: Pull, tag: str, cached: CachedManifest,
                           age: float) -> bool:
        """HEAD the tag upstream: True when the cached manifest was answered (fresh or stale)."""
        try:
            check = await self._fetch(pull, method=b"HEAD", drop=FILL_DROPS)
        except errors.RegistryError as e:
            if e.status in (502, 504):
                return self._serve_stale(pull, tag, cached, age, e.message)
            raise
        code = check.response.code
        digest = (check.response.headers.getRawHeaders(b"docker-content-digest") or [b""])[0]
        await discard(check.response)
        if code == 200 and digest.decode("latin-1") == str(cached.digest):
            self.manifests.set_tag(pull.repo, tag, TagEntry(cached.digest, cached.media_type,
                                                            self.clock.seconds()))
            send_manifest(pull.request, cached, "revalidated")
            return True
        if code == 429 or code >= 500:
            return self._serve_stale(pull, tag, cached, age, f"upstream answered {code}")
        return False

    def _serve_stale(self, pull: Pull, tag: str, cached: CachedManifest, age: float,
                     why: str) -> bool:
        if age >= self.stale_max_age:
            return False
        log.warn("serving {repository}:{tag} from cache, {age:.0f}s old: {why}",
                 repository="/".join(pull.repo), tag=tag, age=age, why=why)
        send_manifest(pull.request, cached, "stale")
        return True

    async def _manifest_from_upstream(self, pull: Pull, reference: str) -> None:
        request, repo, expected = pull.request, pull.repo, pull.digest
        fetched = await self._fetch(pull, drop=FILL_DROPS)
        response = fetched.response
        if response.code != 200 or request.method != b"GET":
            if response.code == 200:
                self.access.note_served(pull.authorization, repo)
                self._remember_head(repo, reference, response.headers)
            self._note_refusal(response.code, pull)
            await self._relay(pull, fetched)
            return
        data = await self.exchange.client(pull.upstream).read_small(response, pull.url,
                                                                    MAX_MANIFEST)
        digest = digests.of(data, expected.algorithm if expected is not None else "sha256")
        if expected is not None and digest != expected:
            raise errors.bad_gateway(pull.upstream.url,
                                     f"manifest {reference} arrived with digest {digest}")
        media_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        manifest = CachedManifest(digest, media_type.decode("latin-1").split(";")[0].strip(),
                                  data)
        self.manifests.put(manifest)
        if ":" not in reference:
            self.manifests.set_tag(repo, reference, TagEntry(
                digest, manifest.media_type, self.clock.seconds()))
        self.access.note_served(pull.authorization, repo, str(digest))
        send_manifest(request, manifest, "miss")

    def _remember_head(self, repo: RepoKey, reference: str, headers: Headers) -> None:
        """A HEAD by tag names its digest: containerd's next pull of the tag needs no upstream."""
        value = (headers.getRawHeaders(b"docker-content-digest") or [b""])[0].decode("latin-1")
        digest = digests.parse_or_none(value)
        media_type = (headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
        if ":" not in reference and digest is not None and media_type:
            self.manifests.set_tag(repo, reference, TagEntry(
                digest, media_type.split(";")[0].strip(), self.clock.seconds()))

    def _note_refusal(self, code: int, pull: Pull) -> None:
        self.remote.answered(pull, code)

    def save_stats(self) -> None:
        self.store.write_meta(STATS_KEY, self.blobs.stats())
