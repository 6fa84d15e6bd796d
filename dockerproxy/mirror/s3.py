"""The S3 tier as a blob source: blobs another instance fetched, shared through S3.

A blob GET the local cache misses is looked up in S3 before the upstream. Found,
it fills the local cache from S3 as it would from the upstream, so its digest is
verified before the client's last byte, ranges are served locally and the next
request is a local hit (or, in redirect mode, the client gets a 307 to a
presigned URL). Access is checked as for a local hit. Any S3 failure is logged
and the blob is left to the upstream, and a blob whose S3 copy failed its fill
is not looked up there again until a verified upstream fill replaces it.

After a verified upstream fill, L{S3Blobs.upload} copies the committed blob to
S3 in the background.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from dockerproxy.cache.blobs import BlobCache, TooLarge
from dockerproxy.cache.fills import Fill
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.digests import Digest
from dockerproxy.mirror.blobs import fallback, have
from dockerproxy.mirror.bypass import drop
from dockerproxy.mirror.remote import Remote
from dockerproxy.mirror.responses import S3, redirect_blob, send_blob
from dockerproxy.pull import Pull
from dockerproxy.relay import discard

if TYPE_CHECKING:  # botocore loads only for a proxy that uses S3
    from dockerproxy.cache.s3 import S3BlobStore

log = Logger()


class S3Blobs:
    """A L{dockerproxy.mirror.blobs.BlobSource} over the S3 C{bucket}, filling C{blobs}
    (whose files are in C{store}); C{redirect} answers with presigned URLs instead."""

    def __init__(
        self,
        bucket: S3BlobStore,
        blobs: BlobCache,
        store: FilesystemStore,
        remote: Remote,
        redirect: bool = False,
    ) -> None:
        self.bucket = bucket
        self.blobs = blobs
        self.store = store
        self.remote = remote
        self.redirect = redirect
        # Digests being uploaded, and those whose S3 copy failed a fill.
        self._uploads: set[Digest] = set()
        self._suspect: set[Digest] = set()

    async def serve(self, pull: Pull, digest: Digest) -> bool:
        if pull.request.method != b"GET" or digest in self._suspect:
            return False
        try:
            size = await self.bucket.head(digest)
        except Exception as e:
            log.warn(
                "S3 cache: cannot look up {digest}, asking the upstream: {error}",
                digest=digest,
                error=e,
            )
            return False
        if size is None or not self.blobs.fits(size):
            return False
        if not await self.remote.readable(pull, digest):
            return True
        if self.redirect and not have(self.blobs, digest):
            redirect_blob(pull.request, digest, self.bucket.presigned_get(digest))
            return True
        if not have(self.blobs, digest) and not await self._fill(digest):
            return False
        return await send_blob(
            pull.request, self.blobs, digest, S3, fallback(self.remote, self.blobs, pull)
        )

    async def _fill(self, digest: Digest) -> bool:
        """Start filling the local cache from S3; C{False} when S3 could not."""
        try:
            response = await self.bucket.get(digest)
        except Exception as e:
            log.warn(
                "S3 cache: cannot get {digest}, asking the upstream: {error}",
                digest=digest,
                error=e,
            )
            return False
        if have(self.blobs, digest):
            await discard(response)  # another client's fill got there first
            return True
        try:
            fill = self.blobs.start_fill(digest, response, idle_timeout=self.bucket.idle_timeout)
        except TooLarge:  # other fills took the room since the size was checked
            await drop(response)
            return False
        fill.done.addCallback(self._fill_ended, fill)
        return have(self.blobs, digest)  # else a small body failed verification at once

    def _fill_ended(self, ok: bool, fill: Fill) -> bool:
        if not ok and not fill.abandoned:
            # Damaged in S3, or S3 broke off: the upstream serves it next, and replaces it.
            self._suspect.add(fill.digest)
            log.warn(
                "S3 cache: filling {digest} from S3 failed; it comes from the upstream from now on",
                digest=fill.digest,
            )
        return ok

    def upload(self, fill: Fill) -> Deferred[bool] | None:
        """Copy a verified upstream fill, once committed, to S3 in the background; the
        Deferred fires when the upload is over, with whether the blob is in S3 now."""
        digest = fill.digest
        if digest in self._uploads:
            return None
        if not fill.committed:
            log.info(
                "S3 cache: {digest} was not kept in the local cache, not uploaded", digest=digest
            )
            return None
        # Runs up to its first wait now, so it opens the committed file before any eviction.
        upload = ensureDeferred(
            self.bucket.upload(
                digest, self.store.blob_path(digest), fill.written, replace=digest in self._suspect
            )
        )
        self._uploads.add(digest)

        def uploaded(done: bool) -> bool:
            self._suspect.discard(digest)
            if done:
                log.info(
                    "S3 cache: uploaded {digest} ({size} bytes)", digest=digest, size=fill.written
                )
            return True  # uploaded, or another instance's copy was there

        def failed(failure: Failure) -> bool:
            log.warn(
                "S3 cache: cannot upload {digest}: {error}", digest=digest, error=failure.value
            )
            return False

        def over(in_s3: bool) -> bool:
            self._uploads.discard(digest)
            return in_s3

        return upload.addCallbacks(uploaded, failed).addCallback(over)
