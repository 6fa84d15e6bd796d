"""The mirror's S3 tier (L{dockerproxy.mirror.s3.S3Blobs}): a blob source between the
local cache and the upstream, and the upload after a verified upstream fill.

The proxy's Site is driven with raw HTTP bytes over a StringTransport, as in
L{tests.unit.proxysite}, with the fake S3 and the fake registry of L{tests.unit.fakes3}.
The real S3 server (SeaweedFS) is in tests/integration/test_cache_s3.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from dockerproxy.config import S3Config, build_config
from tests.unit.fakes import scratch_dir
from tests.unit.fakes3 import (
    BLOB,
    BLOB_PATH,
    CLIENT_PATH,
    DIGEST,
    KEY_ID,
    S3_HOST,
    SECRET,
    FakeS3,
    Registry,
    StubHTTP,
    parse,
    settle,
)
from tests.unit.proxysite import MIRROR, make_parts


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
        table = {
            "endpoint": f"http://{S3_HOST}",
            "bucket": "cache",
            "prefix": "team",
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
            **s3,
        }
        config = build_config({"cache": {"dir": str(scratch_dir(self)), "s3": table}}, {})
        self.proxy, self.mirror, self.site = make_parts(config, self.clock, self.stub)

    def get(
        self, headers: tuple[tuple[str, str], ...] = (), method: str = "GET"
    ) -> tuple[int, Headers, bytes, Any]:
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        lines = [f"{method} {CLIENT_PATH} HTTP/1.1", f"Host: {MIRROR}"]
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
        return "\n".join(
            formatEvent(e) for e in self.events if "S3 cache" in str(e.get("log_format", ""))
        )

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

    def test_a_head_is_answered_by_the_upstream_without_asking_s3(self) -> None:
        self.put_in_s3()
        status, headers, body, _ = self.get(method="HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(headers.getRawHeaders(b"content-length"), [str(len(BLOB)).encode()])
        self.assertEqual(self.registry.seen, [("HEAD", BLOB_PATH)])
        self.assertEqual(self.s3.seen, [], "S3 answers GETs only")

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
        self.assertEqual(
            (location.netloc, location.path), (S3_HOST, f"/cache/team/blobs/sha256/{DIGEST[7:]}")
        )
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
