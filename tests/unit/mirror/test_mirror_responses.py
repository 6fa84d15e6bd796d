"""What the mirror writes for content it has (L{dockerproxy.mirror.responses}): ETags and
If-None-Match, ranges of cached blobs."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.unit.mirror.mirrorsite import DIGEST, INDEX, MANIFEST, TAG_PATH, MirrorTestCase
from tests.unit.proxysite import HUB_HOST, reply


class ConditionalTests(MirrorTestCase):
    def test_if_none_match_on_a_cached_manifest_is_a_304(self) -> None:
        self.pull()
        for value in (f'"{DIGEST}"', DIGEST, f'"sha256:{"0" * 64}", "{DIGEST}"', "*"):
            response = self.fetch(
                "GET", "/v2/busybox/manifests/latest", [("Accept", INDEX), ("If-None-Match", value)]
            )
            self.assertEqual((response.status, response.body), (304, b""), value)
            self.assertEqual(response.header("etag"), f'"{DIGEST}"')
        other = self.fetch(
            "GET",
            "/v2/busybox/manifests/latest",
            [("Accept", INDEX), ("If-None-Match", f'"sha256:{"0" * 64}"')],
        )
        self.assertEqual((other.status, other.body), (200, MANIFEST))
        self.assertEqual(self.upstream_calls(), [("GET", TAG_PATH)])


class BlobRangeTests(MirrorTestCase):
    """Ranges on cached blobs, as RFC 9110 says: unusable ones ignored, past the end 416."""

    def setUp(self) -> None:
        super().setUp()
        self.data = bytes(range(256)) * 4
        self.digest = "sha256:" + hashlib.sha256(self.data).hexdigest()
        self.upstream.on(
            HUB_HOST,
            f"/v2/library/busybox/blobs/{self.digest}",
            reply(200, self.data, content_type="application/octet-stream"),
        )
        self.assertEqual(self.get().status, 200)  # cached

    def get(self, *headers: tuple[str, str]) -> Any:
        return self.fetch("GET", f"/v2/busybox/blobs/{self.digest}", list(headers))

    def test_a_last_byte_before_the_first_is_ignored(self) -> None:
        for value in ("bytes=50-10", "bytes=0-1,5-6", "bytes=x-", "items=0-1"):
            response = self.get(("Range", value))
            self.assertEqual((response.status, response.body), (200, self.data), value)

    def test_a_range_past_the_end_is_416_with_the_size(self) -> None:
        for value in ("bytes=1024-", "bytes=5000-6000", "bytes=-0"):
            response = self.get(("Range", value))
            self.assertEqual(response.status, 416, value)
            self.assertEqual(response.header("content-range"), "bytes */1024")

    def test_a_satisfiable_range_is_206(self) -> None:
        response = self.get(("Range", "bytes=10-19"))
        self.assertEqual((response.status, response.body), (206, self.data[10:20]))
        self.assertEqual(response.header("content-range"), "bytes 10-19/1024")
        self.assertEqual(len(self.upstream_calls()), 1)
