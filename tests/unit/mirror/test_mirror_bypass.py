"""Blob answers that go around the cache (L{dockerproxy.mirror.bypass}): blobs too large to
keep are relayed; a fill the cache gives up leaves its clients to the upstream."""

from __future__ import annotations

import errno
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from tests.unit.mirror.mirrorsite import (
    BLOB,
    BLOB_DIGEST,
    CLIENT_PATH,
    HALF,
    UPSTREAM_PATH,
    BlobTestCase,
    ranged,
)
from tests.unit.proxysite import HUB_HOST, parse_response, reply


class TooLargeTests(BlobTestCase):
    """A blob announced larger than the cache can keep is relayed, never written."""

    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, ranged(BLOB))
        self.blobs = self.mirror.blobs
        self.blobs.max_size = len(BLOB) - 1

    def test_it_is_relayed_and_not_cached(self) -> None:
        for _ in range(2):
            response = self.fetch("GET", CLIENT_PATH)
            self.assertEqual((response.status, response.body), (200, BLOB))
            self.assertEqual(self.access[-1]["cache"], "uncached")
        self.assertEqual(len(self.blob_requests()), 2)
        self.assertNotIn(BLOB_DIGEST, self.blobs)
        self.assertEqual(list((self.mirror.store.root / "tmp").iterdir()), [])
        self.assertEqual((self.blobs.fills, self.blobs.misses), (0, 2))

    def test_a_range_gets_the_answer_to_its_own_request(self) -> None:
        response = self.fetch("GET", CLIENT_PATH, [("Range", "bytes=100-199")])
        self.assertEqual((response.status, response.body), (206, BLOB[100:200]))
        self.assertEqual(response.header("content-range"), f"bytes 100-199/{len(BLOB)}")
        self.assertEqual([s.header("range") for s in self.blob_requests()], [None, "bytes=100-199"])

    def test_the_max_blob_size_bounds_it_too(self) -> None:
        self.blobs.max_size = None
        self.blobs.max_blob_size = len(BLOB) - 1
        self.assertEqual(self.fetch("GET", CLIENT_PATH).body, BLOB)
        self.assertEqual(self.access[-1]["cache"], "uncached")


class FallbackTests(BlobTestCase):
    """A fill the cache gives up (the disk is full) leaves its clients to the upstream:
    each asks for the rest with its own Range and credentials."""

    def setUp(self) -> None:
        super().setUp()
        self.held: list[Request] = []
        self.range_handler = ranged(BLOB)
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, self.handle)
        self.mirror = self.mirror

    def handle(self, request: Request) -> Any:
        """A whole-body GET sends half the blob and waits; a Range is answered at once."""
        if request.getHeader(b"range") is not None:
            return self.range_handler(request)
        if self.chunked:
            request.write(BLOB[:HALF])
        else:
            request.setHeader(b"content-length", b"%d" % len(BLOB))
            request.write(BLOB[:HALF])
        self.held.append(request)
        return NOT_DONE_YET

    chunked = False

    def disk_full_after(self, allowed: int) -> None:
        store = self.mirror.store
        open_partial = store.open_partial

        def limited() -> Any:
            partial = open_partial()
            write = partial.write

            def write_until_full(data: bytes) -> None:
                if partial.size + len(data) > allowed:
                    raise OSError(errno.ENOSPC, "No space left on device")
                write(data)

            partial.write = write_until_full
            return partial

        store.open_partial = limited

    def range_requests(self) -> list[tuple[str | None, str | None]]:
        return [
            (s.header("range"), s.header("authorization"))
            for s in self.blob_requests()
            if s.header("range") is not None
        ]

    def test_the_rest_comes_from_the_upstream_with_the_clients_credentials(self) -> None:
        self.disk_full_after(HALF)
        client = self.get(auth="Bearer alice")
        self.pump()
        self.assertTrue(client.value().endswith(BLOB[:HALF]))
        self.held[0].write(BLOB[HALF:])  # the disk is full now
        self.pump()
        response = parse_response(client.value(), "GET")
        self.assertEqual((response.status, response.body), (200, BLOB))
        self.assertEqual(response.header("content-length"), str(len(BLOB)))
        self.assertFalse(client.disconnected)
        self.assertEqual(self.range_requests(), [(f"bytes={HALF}-{len(BLOB) - 1}", "Bearer alice")])
        self.assertNotIn(BLOB_DIGEST, self.mirror.blobs)
        self.assertEqual(list((self.mirror.store.root / "tmp").iterdir()), [])

    def test_an_upstream_that_ignores_the_range_aborts_the_client(self) -> None:
        self.range_handler = reply(200, BLOB)
        self.disk_full_after(HALF)
        client = self.get()
        self.pump()
        self.held[0].write(BLOB[HALF:])
        self.pump()
        self.assertTrue(client.disconnected)
        self.assertTrue(client.value().endswith(BLOB[:HALF]), "nothing else was sent")

    def test_a_range_starting_elsewhere_aborts_the_client(self) -> None:
        self.range_handler = reply(
            206, BLOB[HALF - 1 :], content_range=f"bytes {HALF - 1}-{len(BLOB) - 1}/{len(BLOB)}"
        )
        self.disk_full_after(HALF)
        client = self.get()
        self.pump()
        self.held[0].write(BLOB[HALF:])
        self.pump()
        self.assertTrue(client.disconnected)

    def test_a_client_sent_nothing_yet_gets_a_registry_error(self) -> None:
        self.range_handler = reply(200, BLOB)
        self.disk_full_after(HALF)
        client = self.get(full=True)
        self.pump()
        self.assertEqual(client.value(), b"", "its socket is full: nothing was sent")
        self.held[0].write(BLOB[HALF:])
        self.pump()
        entry = self.assertRegistryError(parse_response(client.value(), "GET"), 502, "UNAVAILABLE")
        self.assertIn("asked for bytes=0-16383, it answered 200", entry["message"])

    def test_a_fill_abandoned_at_once_gets_a_fresh_answer(self) -> None:
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, ranged(BLOB))
        self.disk_full_after(0)
        response = self.fetch("GET", CLIENT_PATH)
        self.assertEqual((response.status, response.body), (200, BLOB))
        self.assertEqual([s.header("range") for s in self.blob_requests()], [None, None])

    def test_a_body_of_unknown_length_is_resumed_to_its_end(self) -> None:
        self.chunked = True
        self.mirror.blobs.max_size = HALF + 100
        client = self.get()
        self.pump()
        self.held[0].write(BLOB[HALF:])  # past what the cache can keep
        self.pump()
        response = parse_response(client.value(), "GET")
        self.assertEqual((response.status, response.body), (200, BLOB))
        self.assertEqual(self.range_requests(), [(f"bytes={HALF - 1}-", None)])
