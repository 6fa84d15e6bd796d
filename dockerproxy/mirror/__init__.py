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

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from dockerproxy import digests, errors
from dockerproxy.access import AccessCache
from dockerproxy.bypass import UpstreamFallback, drop, relay_uncached
from dockerproxy.cache.blobs import BlobCache, TooLarge
from dockerproxy.cache.manifests import CachedManifest, ManifestStore, TagEntry
from dockerproxy.cache.store import STATS_KEY, FilesystemStore
from dockerproxy.coalesce import Coalescer
from dockerproxy.digests import Digest
from dockerproxy.edge import client_request
from dockerproxy.exchange import Proxy, fetch_for_client, relay_response
from dockerproxy.mirror.responses import redirect_blob, send_blob, send_manifest
from dockerproxy.names import RepoKey
from dockerproxy.pull import Pull
from dockerproxy.relay import discard
from dockerproxy.upstream import Fetched

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import Fill
    from dockerproxy.cache.s3 import S3BlobStore

log = Logger()

# The distribution spec lets registries refuse manifests over 4 MiB.
MAX_MANIFEST = 4 * 1024 * 1024
FILL_DROPS = (b"range", b"if-range", b"if-none-match", b"if-modified-since")


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

    C{exchange} is the upstream side: every miss and every check goes through it.
    """

    def __init__(self, blobs: BlobCache, store: FilesystemStore, access: AccessCache,
                 exchange: Proxy, tag_ttl: float, stale_max_age: float,
                 s3: S3BlobStore | None = None) -> None:
        self.blobs = blobs
        self.exchange = exchange
        # The tier shared with other instances (blobs only), and its bookkeeping:
        # digests being uploaded, and those whose S3 copy failed a fill.
        self.s3 = s3
        self._uploads: set[Digest] = set()
        self._s3_suspect: set[Digest] = set()
        self.store = store
        self.manifests = ManifestStore(store)
        self.access = access
        # A blob that leaves the cache takes its content links with it.
        blobs.on_removed = lambda digest: access.forget_content(str(digest))
        self.clock = exchange.clock
        self.tag_ttl = tag_ttl
        self.stale_max_age = stale_max_age
        # Blob GETs on their way upstream, and the clients waiting for their answers.
        self._fetching = Coalescer()

    async def serve(self, pull: Pull) -> None:
        if pull.kind == "blobs" and pull.digest is not None:
            await self.blob(pull, pull.digest)
        elif pull.kind == "manifests" and pull.reference is not None:
            await self.manifest(pull, pull.reference)
        else:
            await self._relay(pull, await self._fetch(pull))

    async def _fetch(self, pull: Pull, method: bytes | None = None,
                     drop: tuple[bytes, ...] = ()) -> Fetched:
        return await fetch_for_client(self.exchange, pull.request, pull.upstream, pull.url,
                                      method=method, drop=drop)

    async def _relay(self, pull: Pull, fetched: Fetched) -> None:
        await relay_response(self.exchange, pull.request, pull.upstream, fetched, pull.scope,
                             pull.ns)

    def _fallback(self, pull: Pull) -> UpstreamFallback:
        """Where a client's answer goes on if the fill it follows is abandoned."""
        return UpstreamFallback(self.exchange, pull, self.blobs.max_blob_size)

    # ------------------------------------------------------------------ blobs

    async def blob(self, pull: Pull, digest: Digest) -> None:
        request = pull.request
        fallback = self._fallback(pull)
        if self._have_blob(digest):
            if not await self._readable(pull, digest):
                return
            if await send_blob(request, self.blobs, digest, "hit", fallback):
                return
            log.info("blob cache: {digest} is gone (removed beside the proxy, or evicted); "
                     "a miss", digest=digest)
        if request.method == b"HEAD":
            fetched = await self._fetch(pull)
            if fetched.response.code == 200:
                self.access.note_served(pull.authorization, pull.repo, str(digest))
            await self._relay(pull, fetched)
            return
        if self.s3 is not None and await self._from_s3(pull, digest):
            return
        if digest in self._fetching:
            # Another client's GET of this blob is on its way: wait for its answer (its
            # upstream failure is ours too), then look again (its fill serves us too).
            await self._fetching.follow(digest)
            await self.blob(pull, digest)
            return
        stray: IResponse | None = None
        too_large: TooLarge | None = None
        fill: Fill | None = None
        with self._fetching.lead(digest):
            fetched = await self._fetch(pull, drop=FILL_DROPS)
            if fetched.response.code == 200:
                self.access.note_served(pull.authorization, pull.repo, str(digest))
                if self._have_blob(digest):
                    stray = fetched.response  # another client's fill got there first
                else:
                    idle = self.exchange.client(pull.upstream).timeouts.idle
                    try:
                        fill = self.blobs.start_fill(digest, fetched.response,
                                                     idle_timeout=idle)
                    except TooLarge as e:
                        too_large = e
                    else:
                        if self.s3 is not None:
                            fill.done.addCallback(self._upload_to_s3, fill)
        if fetched.response.code != 200:
            self._note_refusal(fetched.response.code, pull)
            await self._relay(pull, fetched)
            return
        if too_large is not None:
            log.info("blob cache: relaying, not caching: {why}", why=too_large)
            self.blobs.misses += 1
            await relay_uncached(self.exchange, pull, fetched)
            return
        if stray is not None:
            await discard(stray)
        if not self._have_blob(digest):
            # A small body can end within start_fill: failed verification, or not kept for
            # the cache's own reasons (the disk), when the client gets a fresh answer.
            if fill is not None and (fill.abandoned or fill.failure is None):
                await fallback.whole()
                return
            raise errors.bad_gateway(pull.upstream.url, f"blob {digest} failed verification")
        if not await send_blob(request, self.blobs, digest, "miss", fallback):
            raise errors.bad_gateway(pull.upstream.url, f"blob {digest} vanished from the cache")

    async def _readable(self, pull: Pull, digest: Digest) -> bool:
        """Whether the client may get cached blob C{digest}; if not, the refusal was sent."""
        repo, authorization = pull.repo, pull.authorization
        if self.access.is_linked(repo, str(digest)) and self.access.may_read(authorization,
                                                                             repo):
            return True
        # Cached, but not yet known to be readable here: a HEAD asks the upstream.
        check = await self._fetch(pull, method=b"HEAD", drop=FILL_DROPS)
        if check.response.code == 200:
            await discard(check.response)
            self.access.note_served(authorization, repo, str(digest))
            return True
        self._note_refusal(check.response.code, pull)
        await self._relay(pull, check)
        return False

    async def _from_s3(self, pull: Pull, digest: Digest) -> bool:
        """Answer a blob GET from the shared S3 tier; False (go upstream) when it cannot.

        The blob fills the local cache from S3 as it would from the upstream, so its
        digest is verified before the client's last byte, ranges are served locally
        and the next request is a local hit. Any S3 failure is logged and left to
        the upstream; access is checked as for a local hit.
        """
        assert self.s3 is not None
        if digest in self._s3_suspect:
            return False
        try:
            size = await self.s3.head(digest)
        except Exception as e:
            log.warn("S3 cache: cannot look up {digest}, asking the upstream: {error}",
                     digest=digest, error=e)
            return False
        if size is None or not self.blobs.fits(size):
            return False
        if not await self._readable(pull, digest):
            return True
        if self.s3.config.redirect and not self._have_blob(digest):
            redirect_blob(pull.request, digest, self.s3.presigned_get(digest))
            return True
        if not self._have_blob(digest):
            try:
                response = await self.s3.get(digest)
            except Exception as e:
                log.warn("S3 cache: cannot get {digest}, asking the upstream: {error}",
                         digest=digest, error=e)
                return False
            if self._have_blob(digest):
                await discard(response)  # another client's fill got there first
            else:
                try:
                    fill = self.blobs.start_fill(digest, response,
                                                 idle_timeout=self.s3.idle_timeout)
                except TooLarge:  # other fills took the room since the check above
                    await drop(response)
                    return False
                fill.done.addCallback(self._s3_fill_ended, fill)
                if not self._have_blob(digest):
                    return False  # a small body failed verification within start_fill
        return await send_blob(pull.request, self.blobs, digest, "s3", self._fallback(pull))

    def _s3_fill_ended(self, ok: bool, fill: Fill) -> bool:
        digest = fill.digest
        if not ok and not fill.abandoned:
            # Damaged in S3, or S3 broke off: the upstream serves it next, and replaces it.
            self._s3_suspect.add(digest)
            log.warn("S3 cache: filling {digest} from S3 failed; it comes from the upstream "
                     "from now on", digest=digest)
        return ok

    def _upload_to_s3(self, ok: bool, fill: Fill) -> bool:
        """Once an upstream fill is committed, copy the blob to S3 in the background."""
        digest = fill.digest
        if not ok or self.s3 is None or digest in self._uploads:
            return ok
        if not fill.committed:
            log.info("S3 cache: {digest} was not kept in the local cache, not uploaded",
                     digest=digest)
            return ok
        # Runs up to its first wait now, so it opens the committed file before any eviction.
        upload = ensureDeferred(self.s3.upload(digest, self.store.blob_path(digest),
                                               fill.written, replace=digest in self._s3_suspect))
        self._uploads.add(digest)

        def uploaded(done: bool) -> None:
            self._s3_suspect.discard(digest)
            if done:
                log.info("S3 cache: uploaded {digest} ({size} bytes)", digest=digest,
                         size=fill.written)

        def failed(failure: Failure) -> None:
            log.warn("S3 cache: cannot upload {digest}: {error}", digest=digest,
                     error=failure.value)

        upload.addCallbacks(uploaded, failed)
        upload.addBoth(lambda _: self._uploads.discard(digest))
        return ok

    def _have_blob(self, digest: Digest) -> bool:
        """Committed or being filled; unlike C{lookup}, counts no hit or miss."""
        return digest in self.blobs or self.blobs.fill_for(digest) is not None

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
        if code in (401, 403):
            self.access.note_refused(pull.authorization, pull.repo)

    def save_stats(self) -> None:
        self.store.write_meta(STATS_KEY, self.blobs.stats())
