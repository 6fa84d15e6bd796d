"""S3-compatible object storage as a blob cache tier that several proxy instances share.

Blobs go there, under C{<prefix>blobs/<alg>/<hex>}: they are immutable and by
far the bulk of a pull, so a blob one instance fetched is served by the others
without the upstream. Manifests stay in each instance's local store, and in a
fleet with Redis (L{dockerproxy.fleet}) are shared as small documents here too
(L{S3BlobStore.get_document}).

Requests are signed with botocore's SigV4 signer (path-style addressing, so any
S3-compatible server works without wildcard DNS) and sent with treq over the
proxy's connection pool. Nothing is buffered whole: a GET's body is handed over
unread for the caller to stream, and an upload reads the committed local file as
the socket drains, in parts for large blobs. Bodies are therefore signed as
C{UNSIGNED-PAYLOAD}: their hash is not known when the headers go out. A blob's
digest still protects its content end to end, since readers verify it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from botocore.credentials import Credentials
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from dockerproxy.cache.s3requests import (
    FileSlice,
    S3Settings,
    error_code,
    object_key,
    part_ranges,
    presign,
    read_small,
    sign,
)
from dockerproxy.digests import Digest
from dockerproxy.failures import describe_failure
from dockerproxy.meters import NO_METERS, Meters
from dockerproxy.relay import Collect, discard

log = Logger()

# S3's first region: buckets there are created without a LocationConstraint.
US_EAST_1 = "us-east-1"
# Bytes a part's producer reads from the file per step: the socket's pace decides how often.
READ_SIZE = 256 * 1024


class S3Error(Exception):
    """An S3 request that failed: no answer (C{status} None) or an error status."""

    def __init__(self, operation: str, status: int | None, why: str) -> None:
        super().__init__(f"{operation}: {why if status is None else f'{status} {why}'.strip()}")
        self.operation = operation
        self.status = status
        self.why = why


class S3BlobStore:
    """Blobs in one bucket under one prefix: look up, stream out, upload, presign.

    Every method raises L{S3Error} (or an OSError reading the local file) on
    failure; callers log and fall back, so S3 trouble never fails a pull.
    """

    def __init__(
        self,
        http: HTTPClient,
        clock: IReactorTime,
        config: S3Settings,
        *,
        timeout: float = 60.0,
        idle_timeout: float = 60.0,
        meters: Meters = NO_METERS,
    ) -> None:
        self.http = http
        self.meters = meters  # counts failed requests
        self.clock = clock
        self.config = config
        self.timeout = timeout  # for response headers; an upload's body reads reset it
        self.idle_timeout = idle_timeout  # for the caller, between body bytes
        self.endpoint = config.endpoint.rstrip("/")
        self._credentials = Credentials(
            config.access_key_id, config.secret_access_key, config.session_token
        )
        self._bucket_ready = False
        # Upload bodies are produced on this clock, like everything else here.
        self._cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))

    # ------------------------------------------------------------------ names

    def key(self, digest: Digest) -> str:
        return object_key(self.config.prefix, digest)

    def object_url(self, digest: Digest) -> str:
        return f"{self.endpoint}/{self.config.bucket}/{self.key(digest)}"

    def presigned_get(self, digest: Digest, expires: int = 300) -> str:
        """A URL a client can GET the blob from directly, for C{expires} seconds."""
        return presign(self._credentials, self.config.region, self.object_url(digest), expires)

    # ----------------------------------------------------------------- bucket

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (in C{region} where that is not us-east-1)."""
        url = f"{self.endpoint}/{self.config.bucket}"
        response = await self._request("HeadBucket", "HEAD", url)
        await discard(response)
        if response.code == 200:
            return
        if response.code != 404:
            raise self._failed("HeadBucket", response.code, "cannot use the bucket")
        body = b""
        if self.config.region != US_EAST_1:
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{escape(self.config.region)}</LocationConstraint>"
                "</CreateBucketConfiguration>"
            ).encode()
        response = await self._request("CreateBucket", "PUT", url, body=body)
        try:
            await self._check("CreateBucket", response, (200,))
        except S3Error as e:
            if e.status != 409 or e.why != "BucketAlreadyOwnedByYou":
                raise
        log.info(
            "S3 cache: created bucket {bucket} at {endpoint}",
            bucket=self.config.bucket,
            endpoint=self.endpoint,
        )

    def start(self) -> Deferred[None]:
        """Check (or create) the bucket now, so a bad setting shows in the log at start.

        Never fatal: until S3 answers, blobs are served from the local cache and the
        upstream, and the next upload tries again. Cancelling it (a stop before S3
        answered) logs nothing.
        """

        def failed(failure: Failure) -> None:
            if not failure.check(CancelledError):
                log.warn(
                    "S3 cache: cannot use bucket {bucket} at {endpoint}: {error}",
                    bucket=self.config.bucket,
                    endpoint=self.endpoint,
                    error=failure.value,
                )

        d = ensureDeferred(self._ensure_bucket_once())
        d.addCallbacks(
            lambda _: log.info(
                "S3 cache: bucket {bucket} at {endpoint}, prefix {prefix!r}",
                bucket=self.config.bucket,
                endpoint=self.endpoint,
                prefix=self.config.prefix,
            ),
            failed,
        )
        return d

    async def _ensure_bucket_once(self) -> None:
        if not self._bucket_ready:
            await self.ensure_bucket()
            self._bucket_ready = True

    # ---------------------------------------------------------------- objects

    async def head(self, digest: Digest) -> int | None:
        """The blob's size in S3, or None when it is not there."""
        response = await self._request("HeadObject", "HEAD", self.object_url(digest))
        await discard(response)
        if response.code == 404:
            return None
        if response.code != 200:
            raise self._failed("HeadObject", response.code, "")
        length = (response.headers.getRawHeaders(b"content-length") or [b""])[0]
        if not length.strip().isdigit():
            raise self._failed("HeadObject", 200, "no Content-Length")
        return int(length)

    async def get(
        self, digest: Digest, byte_range: tuple[int, int | None] | None = None
    ) -> IResponse:
        """The blob's 200 (or 206 for C{byte_range}, inclusive) response, body unread."""
        headers = {}
        if byte_range is not None:
            first, last = byte_range
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        response = await self._request("GetObject", "GET", self.object_url(digest), headers)
        await self._check("GetObject", response, (200, 206), keep_body=True)
        return response

    async def get_document(self, name: str, limit: int) -> bytes | None:
        """The small object C{<prefix>name} (the fleet's manifests), or None when it is not
        there; past C{limit} bytes, or stalled past the idle timeout, it fails."""
        response = await self._request("GetObject", "GET", self._named_url(name))
        if response.code == 404:
            await discard(response)
            return None
        await self._check("GetObject", response, (200,), keep_body=True)
        collector = Collect(limit, self.clock, self.idle_timeout)
        response.deliverBody(collector)
        try:
            return await collector.done
        except Exception as e:
            raise self._failed("GetObject", 200, describe_failure(e)) from None

    async def put_document(self, name: str, data: bytes) -> None:
        """Write the small object C{<prefix>name} whole."""
        await self._ensure_bucket_once()
        response = await self._request(
            "PutObject", "PUT", self._named_url(name), {"Content-Type": "application/json"}, data
        )
        await self._check("PutObject", response, (200,))

    def _named_url(self, name: str) -> str:
        return f"{self.endpoint}/{self.config.bucket}/{self.config.prefix}{quote(name, safe='/')}"

    async def upload(self, digest: Digest, path: Path, size: int, *, replace: bool = False) -> bool:
        """Copy the committed local blob at C{path} to S3, streamed; True if uploaded.

        The file is opened before anything else, so an eviction meanwhile cannot
        take it away. An object already there is kept unless C{replace} (another
        instance uploaded it first). Blobs over one part go up as a multipart upload,
        aborted if any part fails.
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            await self._ensure_bucket_once()
            if not replace and await self.head(digest) is not None:
                return False
            url = self.object_url(digest)
            if size <= self.config.part_size:
                response = await self._request(
                    "PutObject",
                    "PUT",
                    url,
                    {"Content-Type": "application/octet-stream"},
                    body=FileSlice(fd, 0, size),
                )
                await self._check("PutObject", response, (200,))
            else:
                await self._multipart(url, fd, size)
            return True
        finally:
            os.close(fd)

    async def _multipart(self, url: str, fd: int, size: int) -> None:
        response = await self._request(
            "CreateMultipartUpload",
            "POST",
            f"{url}?uploads",
            {"Content-Type": "application/octet-stream"},
            body=b"",
        )
        document = await self._document("CreateMultipartUpload", response)
        upload_id = document.findtext("{*}UploadId") or document.findtext("UploadId")
        if not upload_id:
            raise self._failed("CreateMultipartUpload", response.code, "no UploadId")
        query = f"uploadId={quote(upload_id, safe='-_.~')}"
        try:
            etags = []
            for number, offset, length in part_ranges(size, self.config.part_size):
                response = await self._request(
                    "UploadPart",
                    "PUT",
                    f"{url}?partNumber={number}&{query}",
                    body=FileSlice(fd, offset, length),
                )
                await self._check("UploadPart", response, (200,))
                etag = (response.headers.getRawHeaders(b"etag") or [b""])[0]
                if not etag:
                    raise self._failed("UploadPart", response.code, "no ETag")
                etags.append(etag.decode("latin-1"))
            parts = "".join(
                f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
                for number, etag in enumerate(etags, start=1)
            )
            response = await self._request(
                "CompleteMultipartUpload",
                "POST",
                f"{url}?{query}",
                body=f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode(),
            )
            # S3 may answer 200 and still fail: the body then holds an <Error>.
            await self._document("CompleteMultipartUpload", response)
        except BaseException:
            await self._abort(url, query)
            raise

    async def _abort(self, url: str, query: str) -> None:
        """Drop an unfinished upload's parts; a failure here leaves them to S3's lifecycle."""
        try:
            response = await self._request("AbortMultipartUpload", "DELETE", f"{url}?{query}")
            await self._check("AbortMultipartUpload", response, (200, 204))
        except Exception as e:
            log.warn("S3 cache: cannot abort the upload to {url}: {error}", url=url, error=e)

    # ---------------------------------------------------------------- the wire

    async def _request(
        self,
        operation: str,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | FileSlice | None = None,
    ) -> IResponse:
        """One signed request, unbuffered; no response headers in C{timeout} cancels it."""
        signed = sign(self._credentials, self.config.region, method, url, headers or {})
        producer = None
        if body is not None:
            source = io.BytesIO(body) if isinstance(body, bytes) else body
            producer = FileBodyProducer(source, cooperator=self._cooperator, readSize=READ_SIZE)
        d = self.http.request(
            method,
            url,
            headers=Headers(
                {k.encode("latin-1"): [v.encode("latin-1")] for k, v in signed.items()}
            ),
            data=producer,
            allow_redirects=False,
            unbuffered=True,
        )
        # Cancelling an Agent request fails it with ResponseNeverReceived: a flag tells.
        timed_out: list[bool] = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(self.timeout, expire)
        if isinstance(body, FileSlice):
            body.progress = lambda: timer.reset(self.timeout) if timer.active() else None
        try:
            return await d
        except Exception as e:
            why = (
                f"no response within {self.timeout:g} seconds" if timed_out else describe_failure(e)
            )
            raise self._failed(operation, None, why) from None
        finally:
            if timer.active():
                timer.cancel()

    async def _check(
        self, operation: str, response: IResponse, ok: tuple[int, ...], keep_body: bool = False
    ) -> None:
        """Raise L{S3Error} with S3's error code unless C{response.code} is in C{ok}.

        A successful response's body is read and dropped unless C{keep_body}.
        """
        if response.code in ok:
            if not keep_body:
                await discard(response)
            return
        raise self._failed(operation, response.code, error_code(await read_small(response)))

    def _failed(self, operation: str, status: int | None, why: str) -> S3Error:
        self.meters.s3_failed(operation)
        return S3Error(operation, status, why)

    async def _document(self, operation: str, response: IResponse) -> ElementTree.Element:
        """A 200's XML body, which must not be an <Error>."""
        body = await read_small(response)
        if response.code != 200:
            raise self._failed(operation, response.code, error_code(body))
        try:
            document = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            raise self._failed(operation, 200, "the answer is not XML") from None
        if document.tag.rpartition("}")[2] == "Error":
            raise self._failed(operation, 200, error_code(body))
        return document
