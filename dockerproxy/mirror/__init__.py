"""The pull-through cache in front of the upstream exchange: stores like distribution's.

Each kind of content has its own store composing the local one and the remote
side (L{remote.Remote}), as in distribution's C{registry/proxy}:

- L{blobs.BlobProxy}: blobs from a chain of sources, the local cache, the S3 tier
  shared with other instances (L{s3.S3Blobs}), the upstream;
- L{manifests.ManifestProxy}: manifests by digest, immutable and kept for good;
- L{tags.TagProxy}: tags, revalidated after a TTL and served stale while the
  upstream fails.

L{Mirror} builds them and sends each request to its store; what the cache has
is written to the client by L{responses}. Nothing is served from the cache to a
client the upstream would refuse: see L{dockerproxy.access}. Content a client
may not be served from cache goes upstream as usual, and the upstream decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dockerproxy.access import AccessCache
from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.documents import Documents
from dockerproxy.cache.manifests import ManifestStore
from dockerproxy.cache.store import STATS_KEY
from dockerproxy.exchange import Proxy
from dockerproxy.mirror.blobs import BlobProxy
from dockerproxy.mirror.manifests import ManifestProxy
from dockerproxy.mirror.remote import Remote
from dockerproxy.mirror.s3 import S3Blobs
from dockerproxy.mirror.tags import TagProxy
from dockerproxy.pull import Pull

if TYPE_CHECKING:
    from dockerproxy.cache.s3 import S3BlobStore
    from dockerproxy.fleet.locks import FillLocks
    from dockerproxy.fleet.manifests import SharedManifests


class Mirror:
    """Serves manifests and blobs from the cache when allowed, filling it on misses.

    C{exchange} is the upstream side: every miss and every check goes through it;
    C{s3} adds the blob tier shared with other instances. C{documents} (the
    manifests, tags and counters) share the blobs' store and their disk pool. In a
    fleet, C{shared} holds the tags and manifests every instance sees, and
    C{locks} make one instance at a time fill a blob from the upstream.
    """

    def __init__(
        self,
        blobs: BlobCache,
        documents: Documents,
        access: AccessCache,
        exchange: Proxy,
        tag_ttl: float,
        stale_max_age: float,
        s3: S3BlobStore | None = None,
        shared: SharedManifests | None = None,
        locks: FillLocks | None = None,
    ) -> None:
        self.blobs = blobs
        self.store = store = blobs.store
        self.documents = documents
        self.disk = blobs.disk
        self.access = access
        # A blob that leaves the cache takes its content links with it.
        blobs.on_removed = lambda digest: access.forget_content(str(digest))
        self.remote = Remote(exchange, access)
        self.s3 = (
            None
            if s3 is None
            else S3Blobs(s3, blobs, store, self.remote, redirect=s3.config.redirect)
        )
        self.blob_proxy = BlobProxy(
            blobs,
            self.remote,
            tiers=() if self.s3 is None else (self.s3,),
            after_fill=None if self.s3 is None else self.s3.upload,
            locks=None if self.s3 is None else locks,
        )
        manifests = ManifestStore(documents)
        self.manifest_proxy = ManifestProxy(manifests, self.remote, shared)
        self.tag_proxy = TagProxy(
            manifests,
            self.manifest_proxy,
            self.remote,
            exchange.clock,
            tag_ttl,
            stale_max_age,
            shared,
        )

    async def serve(self, pull: Pull) -> None:
        """Send C{pull} to its store; what none keeps (digests of other algorithms, whose
        bytes the proxy cannot check) is relayed."""
        if pull.kind == "blobs" and pull.digest is not None:
            await self.blob_proxy.serve(pull, pull.digest)
        elif pull.kind == "manifests" and pull.digest is not None:
            await self.manifest_proxy.serve(pull, pull.digest)
        elif pull.kind == "manifests" and pull.tag is not None:
            await self.tag_proxy.serve(pull, pull.tag)
        else:
            await self.remote.relay_fresh(pull)

    def save_stats(self) -> None:
        self.documents.write_meta(STATS_KEY, self.blobs.stats())
