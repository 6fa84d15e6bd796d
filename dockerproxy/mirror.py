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

import base64
import hashlib
import re
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from dockerproxy import errors, names
from dockerproxy.access import AccessCache, RepoKey
from dockerproxy.cache.admin import STATS_KEY
from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.exchange import Proxy, fetch_for_client, relay_response
from dockerproxy.headers import merged_accept
from dockerproxy.relay import Collect
from dockerproxy.routing import Target
from dockerproxy.upstream import discard

log = Logger()

# The distribution spec lets registries refuse manifests over 4 MiB.
MAX_MANIFEST = 4 * 1024 * 1024
FILL_DROPS = (b"range", b"if-range", b"if-none-match", b"if-modified-since")
STALE_WARNING = b'110 dockerproxy "Response is Stale"'
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class CachedManifest:
    digest: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class TagEntry:
    digest: str
    media_type: str
    checked: float


class ManifestStore:
    """Manifests by digest and tag entries, as small documents in the store's meta area."""

    def __init__(self, store: FilesystemStore) -> None:
        self.store = store

    def get(self, digest: str) -> CachedManifest | None:
        algorithm, _, hexdigest = digest.partition(":")
        if not names.is_valid_digest(digest):
            return None
        document = self.store.read_meta(f"manifests/{algorithm}/{hexdigest}")
        if not isinstance(document, dict):
            return None
        try:
            data = base64.b64decode(document["data"])
        except (KeyError, ValueError):
            return None
        if digest_of(data, algorithm) != digest:
            return None  # a damaged document is a miss, never served
        return CachedManifest(digest, str(document.get("media_type", "")), data)

    def put(self, manifest: CachedManifest) -> None:
        algorithm, _, hexdigest = manifest.digest.partition(":")
        self.store.write_meta(f"manifests/{algorithm}/{hexdigest}", {
            "media_type": manifest.media_type,
            "data": base64.b64encode(manifest.data).decode("ascii")})

    def tag(self, repo: RepoKey, tag: str, accept: frozenset[str]) -> TagEntry | None:
        """The most recently checked entry for C{tag} whose media type the client accepts."""
        usable = [e for e in self._tag_entries(repo, tag) if acceptable(e.media_type, accept)]
        return max(usable, key=lambda e: e.checked, default=None)

    def set_tag(self, repo: RepoKey, tag: str, entry: TagEntry) -> None:
        """One entry per media type: an index and a single manifest may share a tag."""
        entries = [e for e in self._tag_entries(repo, tag) if e.media_type != entry.media_type]
        entries.append(entry)
        self.store.write_meta(_tag_key(repo, tag), {
            "upstream": repo[0], "repository": repo[1], "tag": tag,
            "entries": [e.__dict__ for e in entries]})

    def _tag_entries(self, repo: RepoKey, tag: str) -> list[TagEntry]:
        document = self.store.read_meta(_tag_key(repo, tag))
        if not isinstance(document, dict):
            return []
        entries = []
        for raw in document.get("entries", []):
            try:
                entries.append(TagEntry(str(raw["digest"]), str(raw["media_type"]),
                                        float(raw["checked"])))
            except (KeyError, TypeError, ValueError):
                continue
        return entries


def _tag_key(repo: RepoKey, tag: str) -> str:
    return "tags/" + hashlib.sha256("\0".join((*repo, tag)).encode()).hexdigest()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def accepted_types(headers: Headers) -> frozenset[str]:
    """The media types a client accepts, parameters (q=) dropped."""
    merged = merged_accept(headers)
    if merged is None:
        return frozenset()
    return frozenset(v.split(b";")[0].strip().decode("latin-1").lower()
                     for v in merged.split(b","))


def acceptable(media_type: str, accept: frozenset[str]) -> bool:
    """A client that names no types gets nothing from the cache: the upstream decides."""
    return media_type.lower() in accept or "*/*" in accept


def parse_range(value: bytes | None, size: int | None) -> tuple[int, int | None] | None:
    """One C{bytes=} range as (first, last inclusive or None); None serves the whole body."""
    if not value:
        return None
    match = _RANGE_RE.fullmatch(value.decode("latin-1").strip())
    if match is None:
        return None
    first, last = match.groups()
    if first:
        return int(first), int(last) if last else None
    if last and size is not None:
        count = int(last)
        return max(size - count, 0), None
    return None


class Mirror:
    """Serves manifests and blobs from the cache when allowed, filling it on misses."""

    def __init__(self, blobs: BlobCache, store: FilesystemStore, access: AccessCache,
                 clock: IReactorTime, tag_ttl: float, stale_max_age: float) -> None:
        self.blobs = blobs
        self.store = store
        self.manifests = ManifestStore(store)
        self.access = access
        self.clock = clock
        self.tag_ttl = tag_ttl
        self.stale_max_age = stale_max_age

    async def serve(self, proxy: Proxy, request: Request, target: Target, kind: str,
                    reference: str, url: str, scope: str, ns: str | None) -> None:
        if kind == "blobs" and self.blobs.supports(reference):
            await self.blob(proxy, request, target, reference, url, scope, ns)
        elif kind == "manifests":
            await self.manifest(proxy, request, target, reference, url, scope, ns)
        else:
            fetched = await fetch_for_client(proxy, request, target.upstream, url)
            await relay_response(proxy, request, target.upstream, fetched, scope, ns)

    # ------------------------------------------------------------------ blobs

    async def blob(self, proxy: Proxy, request: Request, target: Target, digest: str,
                   url: str, scope: str, ns: str | None) -> None:
        repo = (target.upstream.name, target.repository)
        authorization = request.getHeader(b"authorization")
        if self._have_blob(digest):
            if self.access.is_linked(repo, digest) and self.access.may_read(authorization, repo):
                await self._send_blob(request, digest, "hit")
                return
            # Cached, but not yet known to be readable here: a HEAD asks the upstream.
            check = await fetch_for_client(proxy, request, target.upstream, url,
                                           method=b"HEAD", drop=FILL_DROPS)
            if check.response.code == 200:
                await discard(check.response)
                self.access.note_served(authorization, repo, digest)
                await self._send_blob(request, digest, "hit")
                return
            self._note_refusal(check.response.code, authorization, repo)
            await relay_response(proxy, request, target.upstream, check, scope, ns)
            return
        if request.method == b"HEAD":
            fetched = await fetch_for_client(proxy, request, target.upstream, url)
            if fetched.response.code == 200:
                self.access.note_served(authorization, repo, digest)
            await relay_response(proxy, request, target.upstream, fetched, scope, ns)
            return
        fetched = await fetch_for_client(proxy, request, target.upstream, url, drop=FILL_DROPS)
        if fetched.response.code != 200:
            self._note_refusal(fetched.response.code, authorization, repo)
            await relay_response(proxy, request, target.upstream, fetched, scope, ns)
            return
        self.access.note_served(authorization, repo, digest)
        if self._have_blob(digest):
            await discard(fetched.response)  # another client's fill got there first
        else:
            idle = proxy.client(target.upstream).timeouts.idle
            self.blobs.start_fill(digest, fetched.response, idle_timeout=idle)
        await self._send_blob(request, digest, "miss")

    def _have_blob(self, digest: str) -> bool:
        return self.blobs.fill_for(digest) is not None or self.blobs.lookup(digest) is not None

    async def _send_blob(self, request: Request, digest: str, status: str) -> None:
        request.cache = status  # type: ignore[attr-defined]
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"docker-content-digest", digest.encode())
        request.setHeader(b"docker-distribution-api-version", b"registry/2.0")
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"etag", f'"{digest}"'.encode())
        cached = self.blobs.lookup(digest)
        fill = self.blobs.fill_for(digest)
        size = cached.size if cached is not None else (fill.length if fill else None)
        byte_range = parse_range(request.getHeader(b"range"), size)
        await self.blobs.serve(request, digest, byte_range)

    # -------------------------------------------------------------- manifests

    async def manifest(self, proxy: Proxy, request: Request, target: Target, reference: str,
                       url: str, scope: str, ns: str | None) -> None:
        repo = (target.upstream.name, target.repository)
        authorization = request.getHeader(b"authorization")
        accept = accepted_types(request.requestHeaders)
        by_digest = ":" in reference
        entry: TagEntry | None = None
        if by_digest:
            cached = self.manifests.get(reference)
            usable = (cached is not None and acceptable(cached.media_type, accept)
                      and self.access.is_linked(repo, reference))
        else:
            entry = self.manifests.tag(repo, reference, accept)
            cached = self.manifests.get(entry.digest) if entry is not None else None
            usable = cached is not None
        if cached is not None and usable and self.access.may_read(authorization, repo):
            age = 0.0 if entry is None else self.clock.seconds() - entry.checked
            if age < self.tag_ttl:
                self._send_manifest(request, cached, "hit")
                return
            if await self._revalidated(proxy, request, target, url, repo, reference,
                                       cached, age):
                return
        await self._manifest_from_upstream(proxy, request, target, reference, url, scope, ns,
                                           repo, authorization)

    async def _revalidated(self, proxy: Proxy, request: Request, target: Target, url: str,
                           repo: RepoKey, tag: str, cached: CachedManifest, age: float) -> bool:
        """HEAD the tag upstream: True when the cached manifest was answered (fresh or stale)."""
        try:
            check = await fetch_for_client(proxy, request, target.upstream, url,
                                           method=b"HEAD", drop=FILL_DROPS)
        except errors.RegistryError as e:
            if e.status in (502, 504):
                return self._serve_stale(request, target, repo, tag, cached, age, e.message)
            raise
        code = check.response.code
        digest = (check.response.headers.getRawHeaders(b"docker-content-digest") or [b""])[0]
        await discard(check.response)
        if code == 200 and digest.decode("latin-1") == cached.digest:
            self.manifests.set_tag(repo, tag, TagEntry(cached.digest, cached.media_type,
                                                       self.clock.seconds()))
            self._send_manifest(request, cached, "revalidated")
            return True
        if code == 429 or code >= 500:
            return self._serve_stale(request, target, repo, tag, cached, age,
                                     f"upstream answered {code}")
        return False

    def _serve_stale(self, request: Request, target: Target, repo: RepoKey, tag: str,
                     cached: CachedManifest, age: float, why: str) -> bool:
        if age >= self.stale_max_age:
            return False
        log.warn("serving {repository}:{tag} from cache, {age:.0f}s old: {why}",
                 repository=f"{target.upstream.name}/{repo[1]}", tag=tag, age=age, why=why)
        request.setHeader(b"warning", STALE_WARNING)
        self._send_manifest(request, cached, "stale")
        return True

    async def _manifest_from_upstream(self, proxy: Proxy, request: Request, target: Target,
                                      reference: str, url: str, scope: str, ns: str | None,
                                      repo: RepoKey, authorization: bytes | None) -> None:
        fetched = await fetch_for_client(proxy, request, target.upstream, url, drop=FILL_DROPS)
        response = fetched.response
        if response.code != 200 or request.method != b"GET":
            if response.code == 200:
                self.access.note_served(authorization, repo)
                self._remember_head(repo, reference, response.headers)
            self._note_refusal(response.code, authorization, repo)
            await relay_response(proxy, request, target.upstream, fetched, scope, ns)
            return
        collector = Collect(MAX_MANIFEST)
        response.deliverBody(collector)
        try:
            data = await collector.done
        except Exception as e:
            raise errors.bad_gateway(target.upstream.url, f"manifest body: {e}") from None
        algorithm = reference.partition(":")[0] if ":" in reference else "sha256"
        if algorithm not in ("sha256", "sha512"):
            algorithm = "sha256"
        digest = digest_of(data, algorithm)
        if ":" in reference and digest != reference:
            raise errors.bad_gateway(target.upstream.url,
                                     f"manifest {reference} arrived with digest {digest}")
        media_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        manifest = CachedManifest(digest, media_type.decode("latin-1").split(";")[0].strip(),
                                  data)
        self.manifests.put(manifest)
        if ":" not in reference:
            self.manifests.set_tag(repo, reference, TagEntry(
                digest, manifest.media_type, self.clock.seconds()))
        self.access.note_served(authorization, repo, digest)
        self._send_manifest(request, manifest, "miss")

    def _remember_head(self, repo: RepoKey, reference: str, headers: Headers) -> None:
        """A HEAD by tag names its digest: containerd's next pull of the tag needs no upstream."""
        digest = (headers.getRawHeaders(b"docker-content-digest") or [b""])[0].decode("latin-1")
        media_type = (headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
        if ":" not in reference and names.is_valid_digest(digest) and media_type:
            self.manifests.set_tag(repo, reference, TagEntry(
                digest, media_type.split(";")[0].strip(), self.clock.seconds()))

    def _send_manifest(self, request: Request, manifest: CachedManifest, status: str) -> None:
        request.cache = status  # type: ignore[attr-defined]
        request.setResponseCode(200)
        request.setHeader(b"content-type", manifest.media_type.encode("latin-1"))
        request.setHeader(b"docker-content-digest", manifest.digest.encode())
        request.setHeader(b"docker-distribution-api-version", b"registry/2.0")
        request.setHeader(b"etag", f'"{manifest.digest}"'.encode())
        request.setHeader(b"content-length", b"%d" % len(manifest.data))
        if request.method != b"HEAD":
            request.write(manifest.data)
        request.finish()

    def _note_refusal(self, code: int, authorization: bytes | None, repo: RepoKey) -> None:
        if code in (401, 403):
            self.access.note_refused(authorization, repo)

    def save_stats(self) -> None:
        self.store.write_meta(STATS_KEY, self.blobs.stats())
