"""S3 requests as the store sends them: its settings, SigV4 signatures (botocore's
signer), presigned URLs, object keys, file slices streamed as multipart parts, and the
small answers it reads back (XML documents, error codes)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.web.iweb import IResponse

from dockerproxy.digests import Digest
from dockerproxy.relay import Collect

# S3's most parts per upload.
MAX_PARTS = 10_000
# S3's XML answers (errors, upload ids) are small; anything bigger is not S3.
MAX_DOCUMENT = 1024 * 1024


def object_key(prefix: str, digest: Digest) -> str:
    """C{<prefix>blobs/<alg>/<hex>}."""
    return f"{prefix}blobs/{digest.algorithm}/{digest.hex}"


def part_ranges(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """(part number from 1, offset, length) covering C{size} bytes.

    Parts grow past C{part_size} when it would take more than S3's 10,000.
    """
    if size <= 0:
        return [(1, 0, 0)]
    part_size = max(part_size, -(-size // MAX_PARTS))
    return [
        (number, offset, min(part_size, size - offset))
        for number, offset in enumerate(range(0, size, part_size), start=1)
    ]


class S3Auth(S3SigV4Auth):
    """botocore's S3 SigV4 (paths signed as they are), with the payload hash given.

    Bodies stream after the headers are sent, so the hash is C{UNSIGNED-PAYLOAD}
    unless the caller knows it (the spec's examples do).
    """

    def payload(self, request: AWSRequest) -> str:
        return request.context.get("payload", UNSIGNED_PAYLOAD)


def sign(
    credentials: Credentials,
    region: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload: str = UNSIGNED_PAYLOAD,
) -> dict[str, str]:
    """The headers to send: C{headers} plus Host, X-Amz-Date, X-Amz-Content-SHA256 and
    Authorization. Host is set here so the signed value is the one sent."""
    request = AWSRequest(method=method, url=url, headers={"Host": urlsplit(url).netloc, **headers})
    request.context["payload"] = payload
    S3Auth(credentials, "s3", region).add_auth(request)
    return dict(request.headers.items())


def presign(credentials: Credentials, region: str, url: str, expires: int) -> str:
    """A GET URL that carries its own authorization for C{expires} seconds."""
    request = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(credentials, "s3", region, expires=expires).add_auth(request)
    return request.url


class FileSlice:
    """C{length} bytes of an open file from C{offset}, as a file object of their own.

    A FileBodyProducer sends it as one request body: it learns the length by
    seeking and closes it at the end, which leaves the shared descriptor open.
    C{progress} is called on every read: the socket drained, the upload moves.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._fd = fd
        self._offset = offset
        self._length = length
        self._position = 0
        self.progress: Callable[[], object] | None = None

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._position
        size = remaining if size < 0 else min(size, remaining)
        if size <= 0:
            return b""
        data = os.pread(self._fd, size, self._offset + self._position)
        if not data:
            raise OSError("the blob file is shorter than its size")
        self._position += len(data)
        if self.progress is not None:
            self.progress()
        return data

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = min(max(base + position, 0), self._length)
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        """The descriptor belongs to the upload, which closes it once."""


class S3Settings(Protocol):
    """What the store needs to know (L{dockerproxy.config.S3Config} has it all); C{prefix}
    is empty or ends with C{/}, C{part_size} is at least S3's smallest part."""

    @property
    def endpoint(self) -> str: ...
    @property
    def bucket(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def access_key_id(self) -> str: ...
    @property
    def secret_access_key(self) -> str: ...
    @property
    def session_token(self) -> str | None: ...
    @property
    def part_size(self) -> int: ...
    @property
    def redirect(self) -> bool: ...


async def read_small(response: IResponse) -> bytes:
    """A small answer's body (an XML document, an error), or empty past L{MAX_DOCUMENT}."""
    collector = Collect(MAX_DOCUMENT)
    response.deliverBody(collector)
    try:
        return await collector.done
    except Exception:
        return b""


_CODE_RE = re.compile(rb"<Code>([^<]{1,100})</Code>")


def error_code(body: bytes) -> str:
    """S3's error code (NoSuchKey, SignatureDoesNotMatch, ...) from an error document."""
    match = _CODE_RE.search(body)
    return match.group(1).decode("latin-1") if match else ""
