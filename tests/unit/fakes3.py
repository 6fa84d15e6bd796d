"""A fake S3 and a fake registry behind it, for the S3 store's and the mirror's S3 tests.

L{FakeS3} (path-style, one host) and a registry serving one public blob
(L{Registry}) are one twisted.web Resource, told apart by Host, behind treq's
in-memory agent (L{StubHTTP}), whose body producers are real.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from dockerproxy.digests import parse as parse_digest

S3_HOST = "s3.test:9000"
KEY_ID = "AKIDTEST"
SECRET = "secret-for-tests"
BLOB = bytes(range(256)) * 64  # 16 KiB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
BLOB_DIGEST = parse_digest(DIGEST)
BLOB_PATH = f"/v2/library/busybox/blobs/{DIGEST}"
CLIENT_PATH = f"/v2/busybox/blobs/{DIGEST}"


class FakeS3(Resource):
    """Path-style S3 for one host: buckets, objects, multipart uploads, forced failures.

    Requests must carry a SigV4 Authorization for the test key and an unsigned
    payload, or they get 403.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.buckets: set[str] = set()
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.seen: list[tuple[str, str, str]] = []  # method, path, query
        self.fail: Callable[[str, str, str], int | None] = lambda method, path, query: None

    def render(self, request: Request) -> bytes:
        method = request.method.decode()
        path = request.path.decode()
        query = urlsplit(request.uri.decode()).query
        self.seen.append((method, path, query))
        status = self.fail(method, path, query)
        if status is not None:
            return self.error(request, status, "InternalError")
        authorization = (request.getHeader(b"authorization") or b"").decode()
        if (
            not authorization.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
            or request.getHeader(b"x-amz-content-sha256") != b"UNSIGNED-PAYLOAD"
        ):
            return self.error(request, 403, "AccessDenied")
        bucket, _, key = path.lstrip("/").partition("/")
        args = parse_qs(query, keep_blank_values=True)
        body = request.content.read()
        if not key:
            if method == "PUT":
                self.buckets.add(bucket)
                return b""
            request.setResponseCode(200 if bucket in self.buckets else 404)
            return b""
        if bucket not in self.buckets:
            return self.error(request, 404, "NoSuchBucket")
        if "uploads" in args:
            upload_id = uuid.uuid4().hex + "/x"  # a character that must be escaped
            self.uploads[upload_id] = {}
            return (
                f"<InitiateMultipartUploadResult><UploadId>{upload_id}</UploadId>"
                "</InitiateMultipartUploadResult>"
            ).encode()
        if "uploadId" in args:
            parts = self.uploads.get(args["uploadId"][0])
            if parts is None:
                return self.error(request, 404, "NoSuchUpload")
            if method == "PUT":
                number = int(args["partNumber"][0])
                parts[number] = body
                request.setHeader(b"etag", f'"{hashlib.md5(body).hexdigest()}"'.encode())
                return b""
            if method == "DELETE":
                del self.uploads[args["uploadId"][0]]
                request.setResponseCode(204)
                return b""
            document = ElementTree.fromstring(body)
            numbers = [int(p.findtext("PartNumber") or 0) for p in document.iter("Part")]
            etags = [p.findtext("ETag") for p in document.iter("Part")]
            assert etags == [f'"{hashlib.md5(parts[n]).hexdigest()}"' for n in numbers]
            self.objects[key] = b"".join(parts[n] for n in numbers)
            del self.uploads[args["uploadId"][0]]
            return b"<CompleteMultipartUploadResult/>"
        if method == "PUT":
            self.objects[key] = body
            return b""
        data = self.objects.get(key)
        if data is None:
            return self.error(request, 404, "NoSuchKey")
        if method == "DELETE":
            del self.objects[key]
            return b""
        return data  # GET, and HEAD (twisted.web sends the length, not the body)

    def error(self, request: Request, status: int, code: str) -> bytes:
        request.setResponseCode(status)
        return f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()


class Registry(Resource):
    """The fake S3 on S3_HOST and a registry serving one public blob everywhere else."""

    isLeaf = True

    def __init__(self, s3: FakeS3) -> None:
        super().__init__()
        self.s3 = s3
        self.status = 200
        self.seen: list[tuple[str, str]] = []

    def render(self, request: Request) -> bytes:
        if request.getHeader(b"host") == S3_HOST.encode():
            return self.s3.render(request)
        self.seen.append((request.method.decode(), request.path.decode()))
        if request.path.decode() != BLOB_PATH:
            request.setResponseCode(404)
            return b'{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}'
        request.setResponseCode(self.status)
        if self.status != 200:
            return b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        request.setHeader(b"content-type", b"application/octet-stream")
        return BLOB


class StubHTTP(HTTPClient):
    """treq over StubTreq's in-memory agent, with real body producers (StubTreq takes bytes)."""

    def __init__(self, resource: Resource) -> None:
        self.agent = RequestTraversalAgent(resource)
        super().__init__(self.agent)

    def flush(self) -> None:
        self.agent.flush()


def settle(stub: StubHTTP, clock: Clock, until: Callable[[], bool] = lambda: False) -> None:
    """Run the fake network and the clock's immediate calls (upload bodies, blob senders)."""
    for _ in range(200):
        stub.flush()
        clock.advance(0)
        if until():
            return


def run(stub: StubHTTP, clock: Clock, coroutine: Any) -> Any:
    d: Deferred[Any] = ensureDeferred(coroutine)
    settle(stub, clock, lambda: d.called)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the S3 request never finished"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def parse(raw: bytes) -> tuple[int, Headers, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(b":")
        headers.addRawHeader(name.strip(), value.strip())
    return int(status_line.split(b" ")[1]), headers, body
