"""The S3 cache tier: signing, keys, part math, the store against a fake S3 (see
L{tests.unit.fakes3}), and its settings. The mirror's use of it is in
tests/unit/mirror/test_mirror_s3.py; the real S3 server (SeaweedFS, which checks
signatures for real) in tests/integration/test_cache_s3.py.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotocoreConfig
from botocore.credentials import Credentials
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from dockerproxy.cache.s3 import S3BlobStore, S3Error
from dockerproxy.cache.s3requests import (
    MAX_PARTS,
    FileSlice,
    object_key,
    part_ranges,
    presign,
    sign,
)
from dockerproxy.config import ConfigError, S3Config, build_config
from dockerproxy.digests import of
from dockerproxy.digests import parse as parse_digest
from tests.unit.fakes import scratch_dir
from tests.unit.fakes3 import (
    BLOB_DIGEST,
    DIGEST,
    KEY_ID,
    S3_HOST,
    SECRET,
    FakeS3,
    StubHTTP,
    run,
)

# The examples of AWS's "Signature Version 4 (AWS SigV4)" S3 documentation.
AWS_KEY = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
AWS_TIME = datetime.datetime(2013, 5, 24)
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def at(when: datetime.datetime) -> Any:
    """botocore's signers read the time here: fix it."""
    return mock.patch("botocore.auth.get_current_datetime", lambda: when)


# --------------------------------------------------------------------------- signing


def test_signing_matches_the_aws_example() -> None:
    """AWS's GET Object example (virtual-host style, Range, empty payload hash)."""
    with at(AWS_TIME):
        headers = sign(
            AWS_KEY,
            "us-east-1",
            "GET",
            "https://examplebucket.s3.amazonaws.com/test.txt",
            {"Range": "bytes=0-9"},
            payload=EMPTY_SHA256,
        )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert headers["X-Amz-Date"] == "20130524T000000Z"
    assert headers["Host"] == "examplebucket.s3.amazonaws.com"


def test_streamed_requests_are_signed_with_an_unsigned_payload() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    url = "http://127.0.0.1:8333/bucket/team/blobs/sha256/" + "ab" * 32
    with at(when):
        headers = sign(
            Credentials(KEY_ID, SECRET),
            "eu-west-3",
            "PUT",
            url,
            {"Content-Type": "application/octet-stream"},
        )
    assert headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert headers["X-Amz-Date"] == "20260102T030405Z"
    assert headers["Host"] == "127.0.0.1:8333"
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=AKIDTEST/20260102/eu-west-3/s3/aws4_request, "
        r"SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, "
        r"Signature=[0-9a-f]{64}",
        headers["Authorization"],
    )
    # The same request as botocore's own S3 client signs it with payload signing off.
    request = AWSRequest("PUT", url, headers={"Content-Type": "application/octet-stream"})
    request.context["client_config"] = BotocoreConfig(s3={"payload_signing_enabled": False})
    with at(when):
        S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", "eu-west-3").add_auth(request)
    assert request.headers["Authorization"] == headers["Authorization"]


def test_a_session_token_is_sent_and_signed() -> None:
    headers = sign(
        Credentials(KEY_ID, SECRET, "session"), "us-east-1", "GET", "http://s3.test/b/k", {}
    )
    assert headers["X-Amz-Security-Token"] == "session"
    assert "x-amz-security-token" in headers["Authorization"]


def test_presigning_matches_the_aws_example() -> None:
    with at(AWS_TIME):
        url = presign(
            AWS_KEY, "us-east-1", "https://examplebucket.s3.amazonaws.com/test.txt", 86400
        )
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Signature"] == [
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    ]
    assert query["X-Amz-Expires"] == ["86400"]


def test_presigned_get_is_path_style_and_expires() -> None:
    store = S3BlobStore(
        StubHTTP(Resource()),
        Clock(),
        S3Config(
            "http://s3.test:9000", "cache", "team/", access_key_id=KEY_ID, secret_access_key=SECRET
        ),
    )
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
        f"team/mirror/blobs/sha256/{hexdigest}"
    )
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
        part = FileSlice(fd, 3, 5)
        part.seek(0, os.SEEK_END)
        assert part.tell() == 5  # how FileBodyProducer learns the length
        part.seek(0)
        assert part.read(2) + part.read() + part.read() == b"34567"
        part.close()
        assert os.pread(fd, 1, 0) == b"0", "the shared descriptor stays open"
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the store


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.s3 = FakeS3()
        self.stub = StubHTTP(self.s3)
        self.store = S3BlobStore(
            self.stub,
            self.clock,
            S3Config(
                f"http://{S3_HOST}",
                "cache",
                "team/",
                access_key_id=KEY_ID,
                secret_access_key=SECRET,
                part_size=1000,
            ),
        )
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

    def test_small_documents_go_up_whole_and_come_back_bounded(self) -> None:
        name = f"manifests/sha256/{self.digest.hex}.json"
        self.run_(self.store.put_document(name, b'{"a": 1}'))
        self.assertEqual(self.s3.buckets, {"cache"}, "the bucket is made first")
        self.assertEqual(self.s3.objects[f"team/{name}"], b'{"a": 1}')
        self.assertEqual(self.run_(self.store.get_document(name, 100)), b'{"a": 1}')
        self.assertIsNone(self.run_(self.store.get_document("manifests/none.json", 100)))
        with self.assertRaises(S3Error):
            self.run_(self.store.get_document(name, 4))  # larger than the bound

    def test_a_small_blob_is_one_put(self) -> None:
        self.store = S3BlobStore(
            self.stub,
            self.clock,
            S3Config(
                f"http://{S3_HOST}", "cache", "", access_key_id=KEY_ID, secret_access_key=SECRET
            ),
        )
        self.assertTrue(self.run_(self.store.upload(self.digest, self.path, 2500)))
        self.assertEqual(self.s3.objects, {f"blobs/sha256/{self.digest.hex}": self.data})
        self.assertNotIn("POST", [m for m, _, _ in self.s3.seen])

    def test_an_object_already_there_is_kept_unless_replaced(self) -> None:
        self.s3.buckets.add("cache")
        self.s3.objects[self.key] = self.data
        self.assertFalse(self.run_(self.store.upload(self.digest, self.path, 2500)))
        self.s3.objects[self.key] = b"damaged"
        self.assertTrue(self.run_(self.store.upload(self.digest, self.path, 2500, replace=True)))
        self.assertEqual(self.s3.objects[self.key], self.data)

    def test_a_failed_part_aborts_the_upload(self) -> None:
        self.s3.fail = lambda method, path, query: 500 if "partNumber=2" in query else None
        with self.assertRaises(S3Error) as caught:
            self.run_(self.store.upload(self.digest, self.path, 2500))
        self.assertEqual((caught.exception.operation, caught.exception.status), ("UploadPart", 500))
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


# --------------------------------------------------------------------------- configuration


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def s3_cli(**extra: Any) -> dict[str, Any]:
    return {
        "cache_dir": "/tmp/x",
        "cache_s3_endpoint": "http://127.0.0.1:8333",
        "cache_s3_bucket": "dockerproxy",
        **extra,
    }


def test_options_and_environment_credentials(no_aws_env: pytest.MonkeyPatch) -> None:
    no_aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    s3 = build_config({}, s3_cli(cache_s3_prefix="/team/a", cache_s3_redirect=True)).cache.s3
    assert s3 is not None
    assert (s3.endpoint, s3.bucket, s3.prefix, s3.region) == (
        "http://127.0.0.1:8333",
        "dockerproxy",
        "team/a/",
        "us-east-1",
    )
    assert (s3.access_key_id, s3.secret_access_key, s3.redirect) == ("AKIDENV", "env-secret", True)
    assert "env-secret" not in repr(s3)
    assert build_config({}, {}).cache.s3 is None


def test_the_config_file(no_aws_env: pytest.MonkeyPatch) -> None:
    no_aws_env.setenv("AWS_REGION", "eu-central-1")
    toml = {
        "cache": {
            "s3": {
                "endpoint": "https://minio.internal:9000",
                "bucket": "blobs",
                "access_key_id": "AKIDFILE",
                "secret_access_key": "file-secret",
                "redirect": True,
                "part_size": "8MiB",
            }
        }
    }
    s3 = build_config(toml, {}).cache.s3
    assert s3 is not None
    assert (s3.access_key_id, s3.region, s3.prefix, s3.part_size, s3.redirect) == (
        "AKIDFILE",
        "eu-central-1",
        "",
        8 * 1024 * 1024,
        True,
    )
    s3 = build_config(toml, {"cache_s3_region": "us-west-2", "cache_s3_bucket": "other"}).cache.s3
    assert s3 is not None and (s3.region, s3.bucket) == ("us-west-2", "other")


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({}, {"cache_s3_endpoint": "http://s3"}, "--cache-s3-bucket"),
        ({"cache": {"s3": {"bucket": "b"}}}, {}, "cache.s3.endpoint"),
        ({}, s3_cli(cache_s3_bucket="Bad_Bucket"), "--cache-s3-bucket"),
        ({}, s3_cli(cache_s3_endpoint="ftp://s3"), "--cache-s3-endpoint"),
        ({}, s3_cli(cache_s3_prefix="a/../b"), "--cache-s3-prefix"),
        ({}, s3_cli(cache_s3_region="us east"), "--cache-s3-region"),
        ({}, s3_cli(), "--cache-s3-endpoint"),  # no credentials anywhere
        ({}, s3_cli(cache_enabled=False), "--no-cache"),
        ({"cache": {"s3": {"access_key_id": "A"}}}, s3_cli(), "cache.s3.secret_access_key"),
        (
            {
                "cache": {
                    "s3": {"part_size": "1MiB", "access_key_id": "A", "secret_access_key": "S"}
                }
            },
            s3_cli(),
            "cache.s3.part_size",
        ),
        ({"cache": {"s3": {"secret": "x"}}}, s3_cli(), "cache.s3.secret"),
        ({}, {"cache_s3_redirect": True}, "--cache-s3-endpoint"),
    ],
)
def test_bad_settings_name_their_key(
    no_aws_env: pytest.MonkeyPatch, toml: dict[str, Any], cli: dict[str, Any], key: str
) -> None:
    if cli.get("cache_enabled") is False:
        no_aws_env.setenv("AWS_ACCESS_KEY_ID", "A")
        no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "S")
    with pytest.raises(ConfigError) as caught:
        build_config(toml, cli)
    assert caught.value.key == key
