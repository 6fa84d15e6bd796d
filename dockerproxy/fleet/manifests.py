"""Tags and manifests shared by the fleet, beside each instance's local store.

An instance that misses a manifest by digest, or has no fresh entry for a tag,
asks here before the upstream; whatever it learns from the upstream it publishes
here in the background. Nothing here decides who may read what (the access
records do, L{dockerproxy.access}); a manifest's bytes are checked against their
digest before they are used.

- Tags: one Redis hash per upstream, repository and tag, a field per media type
  (C{{"digest", "checked"}}), expiring after C{ttl} (the stale bound: no instance
  would serve it longer).
- Manifests: their exact bytes and media type, as one small JSON document each, in
  the S3 tier when there is one (L{S3ManifestBytes}), else in Redis
  (L{RedisManifestBytes}, expiring after L{MANIFEST_TTL}); at most L{MAX_MANIFEST}
  bytes each.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dockerproxy.cache.manifests import CachedManifest, TagEntry
from dockerproxy.digests import Digest, parse_or_none
from dockerproxy.fleet.client import FleetClient
from dockerproxy.names import RepoKey

if TYPE_CHECKING:
    from dockerproxy.cache.s3 import S3BlobStore

log = Logger()

# The distribution spec lets registries refuse manifests over 4 MiB; a document is a third more.
MAX_MANIFEST = 4 * 1024 * 1024
MAX_DOCUMENT = MAX_MANIFEST * 4 // 3 + 1024
# How long a manifest kept in Redis lives after it was last published.
MANIFEST_TTL = 7 * 86400
# Media types are short; a longer one is not shared.
MAX_MEDIA_TYPE = 255
# Media types per tag at most (an index and a couple of manifest types in practice).
MAX_TAG_ENTRIES = 8


class ManifestBytes(Protocol):
    """Where the fleet keeps manifest documents."""

    async def get(self, digest: Digest) -> bytes | None: ...

    async def put(self, digest: Digest, document: bytes) -> None: ...


class RedisManifestBytes:
    """Manifest documents in Redis, each expiring L{MANIFEST_TTL} after its last publish."""

    def __init__(self, client: FleetClient) -> None:
        self.client = client

    async def get(self, digest: Digest) -> bytes | None:
        key = self.client.key("manifest", digest.algorithm, digest.hex)
        value = await self.client.call("manifests", lambda r: r.get(key))
        return value if isinstance(value, bytes) else None

    async def put(self, digest: Digest, document: bytes) -> None:
        key = self.client.key("manifest", digest.algorithm, digest.hex)
        await self.client.call("manifests", lambda r: r.set(key, document, ex=MANIFEST_TTL))


class S3ManifestBytes:
    """Manifest documents in the S3 tier, C{<prefix>manifests/<alg>/<hex>.json}. An S3
    failure is logged (and counted among the S3 errors) and the instance goes on alone."""

    def __init__(self, bucket: S3BlobStore, client: FleetClient) -> None:
        self.bucket = bucket
        self.client = client

    async def get(self, digest: Digest) -> bytes | None:
        try:
            return await self.bucket.get_document(_s3_name(digest), MAX_DOCUMENT)
        except Exception as e:
            log.info(
                "fleet: cannot read manifest {digest} from S3: {error}", digest=digest, error=e
            )
            return None

    async def put(self, digest: Digest, document: bytes) -> None:
        try:
            await self.bucket.put_document(_s3_name(digest), document)
        except Exception as e:
            log.info("fleet: cannot write manifest {digest} to S3: {error}", digest=digest, error=e)


class SharedManifests:
    """The fleet's tags (in Redis through C{client}, kept C{ttl} seconds) and manifests
    (in C{documents})."""

    def __init__(self, client: FleetClient, documents: ManifestBytes, ttl: float) -> None:
        self.client = client
        self.documents = documents
        self.ttl = max(1, int(ttl))

    async def manifest(self, digest: Digest) -> CachedManifest | None:
        """The fleet's copy of manifest C{digest}, verified; None if it has none (or a bad one)."""
        document = await self.documents.get(digest)
        if document is None:
            return None
        try:
            parsed = json.loads(document)
            data = base64.b64decode(parsed["data"], validate=True)
            media_type = str(parsed["media_type"])
        except (ValueError, KeyError, TypeError):
            return None
        if not digest.matches(data):
            return None  # damaged or forged: never served
        return CachedManifest(digest, media_type, data)

    def publish_manifest(self, manifest: CachedManifest) -> Deferred[None] | None:
        """Share a verified manifest, in the background."""
        if len(manifest.data) > MAX_MANIFEST or len(manifest.media_type) > MAX_MEDIA_TYPE:
            return None
        document = json.dumps(
            {
                "media_type": manifest.media_type,
                "data": base64.b64encode(manifest.data).decode("ascii"),
            }
        ).encode()
        return Deferred.fromCoroutine(self.documents.put(manifest.digest, document))

    async def tag_entries(self, repo: RepoKey, tag: str) -> list[TagEntry]:
        """The fleet's entries for C{tag}, one per media type (none when Redis is away)."""
        key = self._tag_key(repo, tag)
        fields = await self.client.call("tags", lambda r: r.hgetall(key))
        entries = []
        for media_type, raw in list((fields or {}).items())[:MAX_TAG_ENTRIES]:
            try:
                value = json.loads(raw)
                digest = parse_or_none(str(value["digest"]))
                if digest is not None:
                    entries.append(TagEntry(digest, media_type.decode(), float(value["checked"])))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return entries

    def publish_tag(self, repo: RepoKey, tag: str, entry: TagEntry) -> Deferred[Any] | None:
        """Share what the upstream just named for C{tag}, in the background; the key's
        expiry starts again."""
        if len(entry.media_type) > MAX_MEDIA_TYPE:
            return None
        key, ttl = self._tag_key(repo, tag), self.ttl
        value = json.dumps({"digest": str(entry.digest), "checked": entry.checked})

        def write(r: Any) -> None:
            if r.hlen(key) >= MAX_TAG_ENTRIES and not r.hexists(key, entry.media_type):
                return
            r.hset(key, entry.media_type, value)
            r.expire(key, ttl)

        return Deferred.fromCoroutine(self.client.call("tags", write))

    def _tag_key(self, repo: RepoKey, tag: str) -> str:
        return self.client.key("tag", hashlib.sha256("\0".join((*repo, tag)).encode()).hexdigest())


def _s3_name(digest: Digest) -> str:
    return f"manifests/{digest.algorithm}/{digest.hex}.json"
