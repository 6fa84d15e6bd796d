"""The S3 cache tier: signing, keys, part math, the store against a fake S3, the mirror's use.

The fake S3 (L{FakeS3}) and the fake upstream registry are one twisted.web Resource
behind treq's StubTreq, told apart by Host; the proxy's Site is driven with raw
HTTP bytes over a StringTransport, as in test_resources. The real S3 server
(SeaweedFS, which checks signatures for real) is in tests/integration/test_cache_s3.py.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotocoreConfig
from botocore.credentials import Credentials
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from dockerproxy.cache.s3 import (
    MAX_PARTS,
    S3BlobStore,
    S3Error,
    _FileSlice,
    object_key,
    part_ranges,
    presign,
    sign,
)
from dockerproxy.config import ConfigError, S3Config, build_config
from dockerproxy.digests import of
from dockerproxy.digests import parse as parse_digest
from tests.unit.fakes import scratch_dir
from tests.unit.proxysite import make_parts

# The examples of AWS's "Signature Version 4 (AWS SigV4)" S3 documentation.
AWS_KEY = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
AWS_TIME = datetime.datetime(2013, 5, 24)
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

S3_HOST = "s3.test:9000"
HUB_HOST = "registry-1.docker.io"
MIRROR = "mirror.test:5000"
KEY_ID = "AKIDTEST"
SECRET = "secret-for-tests"
BLOB = bytes(range(256)) * 64  # 16 KiB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
BLOB_DIGEST = parse_digest(DIGEST)
BLOB_PATH = f"/v2/library/busybox/blobs/{DIGEST}"
CLIENT_PATH = f"/v2/busybox/blobs/{DIGEST}"


def at(when: datetime.datetime) -> Any:
    """botocore's signers read the time here: fix it."""
    return mock.patch("botocore.auth.get_current_datetime", lambda: when)


# --------------------------------------------------------------------------- signing


def test_signing_matches_the_aws_example() -> None:
    """AWS's GET Object example (virtual-host style, Range, empty payload hash)."""
    with at(AWS_TIME):
        headers = sign(AWS_KEY, "us-east-1", "GET",
                       "https://examplebucket.s3.amazonaws.com/test.txt",
                       {"Range": "bytes=0-9"}, payload=EMPTY_SHA256)
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert headers["X-Amz-Date"] == "20130524T000000Z"
    assert headers["Host"] == "examplebucket.s3.amazonaws.com"


def test_streamed_requests_are_signed_with_an_unsigned_payload() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    url = "http://127.0.0.1:8333/bucket/team/blobs/sha256/" + "ab" * 32
    with at(when):
        headers = sign(Credentials(KEY_ID, SECRET), "eu-west-3", "PUT", url,
                       {"Content-Type": "application/octet-stream"})
    assert headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert headers["X-Amz-Date"] == "20260102T030405Z"
    assert headers["Host"] == "127.0.0.1:8333"
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=AKIDTEST/20260102/eu-west-3/s3/aws4_request, "
        r"SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, "
        r"Signature=[0-9a-f]{64}", headers["Authorization"])
    # The same request as botocore's own S3 client signs it with payload signing off.
    request = AWSRequest("PUT", url, headers={"Content-Type": "application/octet-stream"})
    request.context["client_config"] = BotocoreConfig(s3={"payload_signing_enabled": False})
    with at(when):
        S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", "eu-west-3").add_auth(request)
    assert request.headers["Authorization"] == headers["Authorization"]


def test_a_session_token_is_sent_and_signed() -> None:
    headers = sign(Credentials(KEY_ID, SECRET, "session"), "us-east-1", "GET",
                   "http://s3.test/b/k", {})
    assert headers["X-Amz-Security-Token"] == "session"
    assert "x-amz-security-token" in headers["Authorization"]


def test_presigning_matches_the_aws_example() -> None:
    with at(AWS_TIME):
        url = presign(AWS_KEY, "us-east-1", "https://examplebucket.s3.amazonaws.com/test.txt",
                      86400)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Signature"] == [
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"]
    assert query["X-Amz-Expires"] == ["86400"]


def test_presigned_get_is_path_style_and_expires() -> None:
    store = S3BlobStore(StubHTTP(Resource()), Clock(), S3Config(
        "http://s3.test:9000", "cache", "team/", access_key_id=KEY_ID,
        secret_access_key=SECRET))
    parts = urlsplit(store.presigned_get(BLOB_DIGEST))
    query = parse_qs(parts.query)
    assert (parts.scheme, parts.netloc) == ("http", "s3.test:9000")
    assert parts.path == f"/cache/team/blobs/sha256/{DIGEST[7:]}"
    assert query["X-Amz-Expires"] == ["300"]
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"][0])
    assert query["X-Amz-Credential"][0].startswith(f"{KEY_ID}/")
    assert "X-Amz-Expires=60&" in store.presigned_get(BLOB_DIGEST, expires=60)


# --------------------------------------------------------------------------- names and parts


def test_object_keys() -> None:
    hexdigest = "ab" * 32
    assert object_key("", parse_digest(f"sha256:{hexdigest}")) == f"blobs/sha256/{hexdigest}"
    assert object_key("team/mirror/", parse_digest(f"sha256:{hexdigest}")) == (
        f"team/mirror/blobs/sha256/{hexdigest}")
    assert object_key("", parse_digest("sha512:" + "cd" * 64)) == "blobs/sha512/" + "cd" * 64
    for bad in ("sha256:AB", "md5:" + "ab" * 16, "sha256:../../etc/passwd"):
        with pytest.raises(ValueError):
            object_key("", parse_digest(bad))


def test_parts_cover_the_blob_in_order() -> None:
    mib = 1024 * 1024
    parts = part_ranges(20_000_000, 5 * mib)
    assert [n for n, _, _ in parts] == [1, 2, 3, 4]
    assert [length for _, _, length in parts] == [5 * mib] * 3 + [20_000_000 - 15 * mib]
    assert all(offset == (n - 1) * 5 * mib for n, offset, _ in parts)
    assert part_ranges(10 * mib, 5 * mib) == [(1, 0, 5 * mib), (2, 5 * mib, 5 * mib)]
    assert part_ranges(0, 5 * mib) == [(1, 0, 0)]


def test_parts_grow_past_s3s_limit_of_10000() -> None:
    size = 10**12 + 1
    parts = part_ranges(size, 64 * 1024 * 1024)
    assert len(parts) <= MAX_PARTS
    assert sum(length for _, _, length in parts) == size
    assert parts[-1][1] + parts[-1][2] == size


def test_a_file_slice_is_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        part = _FileSlice(fd, 3, 5)
        part.seek(0, os.SEEK_END)
        assert part.tell() == 5  # how FileBodyProducer learns the length
        part.seek(0)
        assert part.read(2) + part.read() + part.read() == b"34567"
        part.close()
        assert os.pread(fd, 1, 0) == b"0", "the shared descriptor stays open"
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- a fake S3


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
        if (not authorization.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
                or request.getHeader(b"x-amz-content-sha256") != b"UNSIGNED-PAYLOAD"):
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
            return (f"<InitiateMultipartUploadResult><UploadId>{upload_id}</UploadId>"
                    "</InitiateMultipartUploadResult>").encode()
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


# --------------------------------------------------------------------------- the store


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.s3 = FakeS3()
        self.stub = StubHTTP(self.s3)
        self.store = S3BlobStore(self.stub, self.clock, S3Config(
            f"http://{S3_HOST}", "cache", "team/", access_key_id=KEY_ID,
            secret_access_key=SECRET, part_size=1000))
        self.path = scratch_dir(self) / "blob"
        self.data = os.urandom(2500)
        self.path.write_bytes(self.data)
        self.digest = of(self.data)
        self.key = f"team/blobs/sha256/{self.digest.hex}"

    def run_(self, coroutine: Any) -> Any:
        return run(self.stub, self.clock, coroutine)

    def test_the_bucket_is_created_when_missing(self) -> None:
        self.run_(self.store.ensure_bucket())
        self.assertEqual(self.s3.buckets, {"cache"})
        self.assertEqual([m for m, _, _ in self.s3.seen], ["HEAD", "PUT"])
        self.run_(self.store.ensure_bucket())
        self.assertEqual([m for m, _, _ in self.s3.seen], ["HEAD", "PUT", "HEAD"])

    def test_a_large_blob_goes_up_in_parts(self) -> None:
        self.assertTrue(self.run_(self.store.upload(self.digest, self.path, 2500)))
        self.assertEqual(self.s3.objects, {self.key: self.data})
        self.assertEqual(self.s3.uploads, {})
        parts = [q for m, _, q in self.s3.seen if m == "PUT" and "partNumber" in q]
        self.assertEqual([parse_qs(q)["partNumber"] for q in parts], [["1"], ["2"], ["3"]])
        self.assertEqual(self.run_(self.store.head(self.digest)), 2500)

    def test_a_small_blob_is_one_put(self) -> None:
        self.store = S3BlobStore(self.stub, self.clock, S3Config(
            f"http://{S3_HOST}", "cache", "", access_key_id=KEY_ID, secret_access_key=SECRET))
        self.assertTrue(self.run_(self.store.upload(self.digest, self.path, 2500)))
        self.assertEqual(self.s3.objects, {f"blobs/sha256/{self.digest.hex}": self.data})
        self.assertNotIn("POST", [m for m, _, _ in self.s3.seen])

    def test_an_object_already_there_is_kept_unless_replaced(self) -> None:
        self.s3.buckets.add("cache")
        self.s3.objects[self.key] = self.data
        self.assertFalse(self.run_(self.store.upload(self.digest, self.path, 2500)))
        self.s3.objects[self.key] = b"damaged"
        self.assertTrue(self.run_(self.store.upload(self.digest, self.path, 2500,
                                                    replace=True)))
        self.assertEqual(self.s3.objects[self.key], self.data)

    def test_a_failed_part_aborts_the_upload(self) -> None:
        self.s3.fail = lambda method, path, query: 500 if "partNumber=2" in query else None
        with self.assertRaises(S3Error) as caught:
            self.run_(self.store.upload(self.digest, self.path, 2500))
        self.assertEqual((caught.exception.operation, caught.exception.status),
                         ("UploadPart", 500))
        self.assertEqual(caught.exception.why, "InternalError")
        self.assertEqual(self.s3.seen[-1][0], "DELETE")
        self.assertEqual(self.s3.uploads, {}, "the parts were dropped")
        self.assertEqual(self.s3.objects, {})

    def test_head_and_get(self) -> None:
        self.s3.buckets.add("cache")
        self.assertIsNone(self.run_(self.store.head(self.digest)))
        self.s3.objects[self.key] = self.data
        self.assertEqual(self.run_(self.store.head(self.digest)), 2500)
        response = self.run_(self.store.get(self.digest))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.run_(response.content()), self.data)

    def test_errors_carry_s3s_code(self) -> None:
        with self.assertRaises(S3Error) as caught:
            self.run_(self.store.get(self.digest))
        self.assertEqual((caught.exception.status, caught.exception.why), (404, "NoSuchBucket"))
        self.s3.fail = lambda *_: 503
        with self.assertRaises(S3Error):
            self.run_(self.store.head(self.digest))

    def test_no_answer_times_out(self) -> None:
        store = S3BlobStore(StubHTTP(NeverAnswers()), self.clock, self.store.config, timeout=5)
        d = ensureDeferred(store.head(self.digest))
        self.clock.advance(5)
        failure = self.failureResultOf(d, S3Error)
        self.assertIn("no response within 5 seconds", str(failure.value))


class NeverAnswers(Resource):
    isLeaf = True

    def render(self, request: Request) -> Any:
        from twisted.web.server import NOT_DONE_YET

        return NOT_DONE_YET


# --------------------------------------------------------------------------- the mirror


def parse(raw: bytes) -> tuple[int, Headers, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(b":")
        headers.addRawHeader(name.strip(), value.strip())
    return int(status_line.split(b" ")[1]), headers, body


class MirrorTests(SynchronousTestCase):
    """The blob path with an S3 tier: hits, uploads, redirects, and S3 failing."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.s3 = FakeS3()
        self.registry = Registry(self.s3)
        self.stub = StubHTTP(self.registry)
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.use()

    def use(self, **s3: Any) -> None:
        table = {"endpoint": f"http://{S3_HOST}", "bucket": "cache", "prefix": "team",
                 "access_key_id": KEY_ID, "secret_access_key": SECRET, **s3}
        config = build_config({"cache": {"dir": str(scratch_dir(self)), "s3": table}}, {})
        self.proxy, self.mirror, self.site = make_parts(config, self.clock, self.stub)

    def get(self, headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, Headers, bytes, Any]:
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        lines = [f"GET {CLIENT_PATH} HTTP/1.1", f"Host: {MIRROR}"]
        lines += [f"{name}: {value}" for name, value in headers]
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        settle(self.stub, self.clock)
        status, response_headers, body = parse(transport.value())
        return status, response_headers, body, transport

    def put_in_s3(self, data: bytes = BLOB) -> None:
        self.s3.buckets.add("cache")
        self.s3.objects[f"team/blobs/sha256/{DIGEST[7:]}"] = data

    def upstream_gets(self) -> int:
        return self.registry.seen.count(("GET", BLOB_PATH))

    def access_cache(self) -> list[str]:
        return [e["cache"] for e in self.events if e.get("log_namespace") == "dockerproxy.access"]

    def warnings(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events
                         if "S3 cache" in str(e.get("log_format", "")))

    def test_a_blob_in_s3_is_served_without_an_upstream_get(self) -> None:
        self.put_in_s3()
        status, headers, body, _ = self.get()
        self.assertEqual((status, body), (200, BLOB))
        self.assertEqual(headers.getRawHeaders(b"docker-content-digest"), [DIGEST.encode()])
        self.assertEqual(self.registry.seen, [("HEAD", BLOB_PATH)], "access asked with a HEAD")
        self.assertEqual(self.access_cache(), ["s3"])
        status, _, body, _ = self.get()
        self.assertEqual((status, body), (200, BLOB))
        self.assertEqual(self.access_cache(), ["s3", "hit"], "the S3 copy filled the local cache")

    def test_a_blob_from_the_upstream_is_uploaded(self) -> None:
        status, _, body, _ = self.get()
        self.assertEqual((status, body), (200, BLOB))
        self.assertEqual(self.upstream_gets(), 1)
        self.assertEqual(self.s3.objects, {f"team/blobs/sha256/{DIGEST[7:]}": BLOB})
        self.assertIn("uploaded", self.warnings())

    def test_redirect_mode_answers_with_a_presigned_url(self) -> None:
        self.use(redirect=True)
        self.put_in_s3()
        status, headers, _, _ = self.get()
        self.assertEqual(status, 307)
        location = urlsplit((headers.getRawHeaders(b"location") or [b""])[0].decode())
        self.assertEqual((location.netloc, location.path),
                         (S3_HOST, f"/cache/team/blobs/sha256/{DIGEST[7:]}"))
        self.assertIn("X-Amz-Signature", parse_qs(location.query))
        self.assertEqual(self.upstream_gets(), 0)
        self.assertEqual(self.access_cache(), ["s3-redirect"])

    def test_a_refusal_from_the_upstream_is_relayed_not_the_s3_copy(self) -> None:
        self.put_in_s3()
        self.registry.status = 401
        status, _, body, _ = self.get()
        self.assertEqual(status, 401)
        self.assertNotIn(BLOB, body)
        self.assertEqual(self.registry.seen, [("HEAD", BLOB_PATH)])

    def test_a_failing_s3_does_not_fail_the_pull(self) -> None:
        self.s3.fail = lambda *_: 500
        status, _, body, _ = self.get()
        self.assertEqual((status, body), (200, BLOB))
        self.assertEqual(self.upstream_gets(), 1)
        self.assertIn("cannot look up", self.warnings())
        self.assertIn("cannot upload", self.warnings())

    def test_an_s3_get_failing_after_its_head_goes_upstream(self) -> None:
        self.put_in_s3()
        self.s3.fail = lambda method, path, query: 500 if method == "GET" else None
        status, _, body, _ = self.get()
        self.assertEqual((status, body), (200, BLOB))
        self.assertEqual(self.upstream_gets(), 1)

    def test_an_unreachable_s3_does_not_fail_the_pull(self) -> None:
        class Broken:
            config = S3Config("http://x", "b")
            idle_timeout = 5.0

            async def head(self, digest: str) -> int | None:
                raise ConnectionRefusedError("connection refused")

            async def upload(self, *args: Any, **kwargs: Any) -> bool:
                raise OSError("no route to host")

        self.mirror.s3.bucket = Broken()
        status, _, body, _ = self.get()
        self.assertEqual((status, body), (200, BLOB))
        self.assertIn("no route to host", self.warnings())

    def test_a_damaged_s3_copy_is_never_served_and_gets_replaced(self) -> None:
        # Here the whole body is in before verification ends, so the same request goes
        # upstream; a body still arriving would abort the client (see test_cache_blobs).
        self.put_in_s3(bytes(reversed(BLOB)))
        status, _, body, _ = self.get()
        self.assertEqual((status, body), (200, BLOB))
        self.assertEqual(self.upstream_gets(), 1)
        self.assertIn("from S3 failed", self.warnings())
        self.assertEqual(self.s3.objects[f"team/blobs/sha256/{DIGEST[7:]}"], BLOB)
        self.assertEqual(self.get()[:3:2], (200, BLOB))
        self.assertEqual(self.access_cache(), ["miss", "hit"])


# --------------------------------------------------------------------------- configuration


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def s3_cli(**extra: Any) -> dict[str, Any]:
    return {"cache_dir": "/tmp/x", "cache_s3_endpoint": "http://127.0.0.1:8333",
            "cache_s3_bucket": "dockerproxy", **extra}


def test_options_and_environment_credentials(no_aws_env: pytest.MonkeyPatch) -> None:
    no_aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    s3 = build_config({}, s3_cli(cache_s3_prefix="/team/a", cache_s3_redirect=True)).cache.s3
    assert s3 is not None
    assert (s3.endpoint, s3.bucket, s3.prefix, s3.region) == (
        "http://127.0.0.1:8333", "dockerproxy", "team/a/", "us-east-1")
    assert (s3.access_key_id, s3.secret_access_key, s3.redirect) == (
        "AKIDENV", "env-secret", True)
    assert "env-secret" not in repr(s3)
    assert build_config({}, {}).cache.s3 is None


def test_the_config_file(no_aws_env: pytest.MonkeyPatch) -> None:
    no_aws_env.setenv("AWS_REGION", "eu-central-1")
    toml = {"cache": {"s3": {"endpoint": "https://minio.internal:9000", "bucket": "blobs",
                             "access_key_id": "AKIDFILE", "secret_access_key": "file-secret",
                             "redirect": True, "part_size": "8MiB"}}}
    s3 = build_config(toml, {}).cache.s3
    assert s3 is not None
    assert (s3.access_key_id, s3.region, s3.prefix, s3.part_size, s3.redirect) == (
        "AKIDFILE", "eu-central-1", "", 8 * 1024 * 1024, True)
    s3 = build_config(toml, {"cache_s3_region": "us-west-2", "cache_s3_bucket": "other"}).cache.s3
    assert s3 is not None and (s3.region, s3.bucket) == ("us-west-2", "other")


@pytest.mark.parametrize(("toml", "cli", "key"), [
    ({}, {"cache_s3_endpoint": "http://s3"}, "--cache-s3-bucket"),
    ({"cache": {"s3": {"bucket": "b"}}}, {}, "cache.s3.endpoint"),
    ({}, s3_cli(cache_s3_bucket="Bad_Bucket"), "--cache-s3-bucket"),
    ({}, s3_cli(cache_s3_endpoint="ftp://s3"), "--cache-s3-endpoint"),
    ({}, s3_cli(cache_s3_prefix="a/../b"), "--cache-s3-prefix"),
    ({}, s3_cli(cache_s3_region="us east"), "--cache-s3-region"),
    ({}, s3_cli(), "--cache-s3-endpoint"),  # no credentials anywhere
    ({}, s3_cli(cache_enabled=False), "--no-cache"),
    ({"cache": {"s3": {"access_key_id": "A"}}}, s3_cli(), "cache.s3.secret_access_key"),
    ({"cache": {"s3": {"part_size": "1MiB", "access_key_id": "A", "secret_access_key": "S"}}},
     s3_cli(), "cache.s3.part_size"),
    ({"cache": {"s3": {"secret": "x"}}}, s3_cli(), "cache.s3.secret"),
    ({}, {"cache_s3_redirect": True}, "--cache-s3-endpoint"),
])
def test_bad_settings_name_their_key(no_aws_env: pytest.MonkeyPatch, toml: dict[str, Any],
                                     cli: dict[str, Any], key: str) -> None:
    if cli.get("cache_enabled") is False:
        no_aws_env.setenv("AWS_ACCESS_KEY_ID", "A")
        no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "S")
    with pytest.raises(ConfigError) as caught:
        build_config(toml, cli)
    assert caught.value.key == key
