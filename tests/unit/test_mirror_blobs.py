"""The mirror's blob path when things go wrong: upstream failures shared by waiting
clients, blob files that vanish under a running proxy, fills the cache gives up.

Whole Site over raw HTTP bytes, as in test_resources, with the cache on a real
temporary directory (test_mirror's L{MirrorTestCase}).
"""

from __future__ import annotations

import errno
import hashlib
from typing import Any

from test_mirror import MirrorTestCase
from test_resources import HUB_HOST, ScriptedHTTP, parse_response, reply
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.web.server import NOT_DONE_YET, Request

from dockerproxy.config import DOCKER_HUB_URL, build_config
from dockerproxy.digests import parse

BLOB = bytes(range(256)) * 64  # 16 KiB
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
CLIENT_PATH = f"/v2/busybox/blobs/{BLOB_DIGEST}"
UPSTREAM_PATH = f"/v2/library/busybox/blobs/{BLOB_DIGEST}"
HALF = len(BLOB) // 2


class BlobTestCase(MirrorTestCase):
    def serve_blob(self, body: bytes = BLOB, **headers: str) -> None:
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, reply(200, body, **headers))

    def get(self, auth: str | None = None, method: str = "GET",
            full: bool = False) -> StringTransport:
        """Send a blob request without pumping the upstream's answers; C{full}: the client's
        socket buffer is full from the start."""
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        if full:
            transport.producer.pauseProducing()  # the channel, as a full socket pauses it
        lines = [f"{method} {CLIENT_PATH} HTTP/1.1", "Host: mirror.test"]
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        return transport

    def blob_requests(self) -> list[Any]:
        return [s for s in self.upstream.requests_to(HUB_HOST) if s.path == UPSTREAM_PATH]


class SharedFailureTests(BlobTestCase):
    """Clients waiting on one uncached blob share the leader's upstream failure."""

    def test_a_timeout_reaches_every_waiter_at_once_with_one_request(self) -> None:
        http = ScriptedHTTP()
        self.use(build_config({"timeouts": {"headers": 30}}, {}), http=http)
        clients = [self.get() for _ in range(6)]
        self.assertEqual(len(http.calls), 1)
        self.clock.advance(30.1)
        for transport in clients:
            response = parse_response(transport.value(), "GET")
            entry = self.assertRegistryError(response, 504, "UNAVAILABLE")
            self.assertIn(DOCKER_HUB_URL, entry["message"])
        self.assertEqual(len(http.calls), 1, "the waiters made requests of their own")

    def test_a_refused_connection_reaches_every_waiter(self) -> None:
        answers: list[defer.Deferred[Any]] = []

        def later() -> defer.Deferred[Any]:
            answers.append(defer.Deferred())
            return answers[-1]

        self.use(build_config({}, {}), http=ScriptedHTTP(later))
        clients = [self.get(auth=f"Bearer user{n}") for n in range(3)]
        answers[0].errback(ConnectionRefusedError("127.0.0.1"))
        for transport in clients:
            response = parse_response(transport.value(), "GET")
            entry = self.assertRegistryError(response, 502, "UNAVAILABLE")
            self.assertIn("connection refused", entry["message"])
        self.assertEqual(len(answers), 1)

    def test_an_answer_that_depends_on_credentials_is_not_shared(self) -> None:
        held: list[Request] = []

        def by_credentials(request: Request) -> Any:
            if request.getHeader(b"authorization") == b"Bearer alice":
                held.append(request)
                return NOT_DONE_YET
            request.setHeader(b"content-length", b"%d" % len(BLOB))
            return BLOB

        self.upstream.on(HUB_HOST, UPSTREAM_PATH, by_credentials)
        alice = self.get(auth="Bearer alice")
        self.pump()
        bob = self.get(auth="Bearer bob")
        self.pump()
        self.assertEqual(len(self.blob_requests()), 1, "bob waits for alice's answer")
        [request] = held
        request.setResponseCode(401)
        request.write(b'{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}')
        request.finish()
        self.pump()
        self.assertEqual(parse_response(alice.value(), "GET").status, 401)
        answer = parse_response(bob.value(), "GET")
        self.assertEqual((answer.status, answer.body), (200, BLOB))
        self.assertEqual([s.header("authorization") for s in self.blob_requests()],
                         ["Bearer alice", "Bearer bob"])


class VanishedBlobTests(BlobTestCase):
    """A cached blob whose file is gone is an ordinary miss, never a 500."""

    def setUp(self) -> None:
        super().setUp()
        self.serve_blob()
        self.blobs = self.mirror.blobs
        self.path = self.mirror.store.blob_path(parse(BLOB_DIGEST))

    def cache_blob(self, auth: str | None = None) -> None:
        headers = [] if auth is None else [("Authorization", auth)]
        first = self.fetch("GET", CLIENT_PATH, headers)
        self.assertEqual((first.status, first.body), (200, BLOB))
        self.assertTrue(self.path.exists())

    def test_a_file_removed_beside_the_proxy_is_fetched_again(self) -> None:
        self.cache_blob()
        self.path.unlink()  # what `python -m dockerproxy.cache prune` does
        again = self.fetch("GET", CLIENT_PATH)
        self.assertEqual((again.status, again.body), (200, BLOB))
        self.assertEqual(again.header("docker-content-digest"), BLOB_DIGEST)
        self.assertEqual(len(self.blob_requests()), 2)
        self.assertEqual(self.access[-1]["cache"], "miss")
        self.assertEqual(self.path.read_bytes(), BLOB, "the index and the file agree again")
        self.assertEqual(self.fetch("GET", CLIENT_PATH).body, BLOB)
        self.assertEqual(len(self.blob_requests()), 2)
        self.assertEqual((self.blobs.hits, self.blobs.misses), (1, 2))

    def test_a_removed_file_answers_head_from_the_upstream(self) -> None:
        self.cache_blob()
        self.path.unlink()
        head = self.fetch("HEAD", CLIENT_PATH)
        self.assertEqual(head.status, 200)
        self.assertEqual([s.method for s in self.blob_requests()], ["GET", "HEAD"])

    def test_a_blob_evicted_during_the_access_check_is_fetched_again(self) -> None:
        held: list[Request] = []

        def head_held(request: Request) -> Any:
            if request.method == b"HEAD":
                held.append(request)
                return NOT_DONE_YET
            request.setHeader(b"content-length", b"%d" % len(BLOB))
            return BLOB

        self.upstream.on(HUB_HOST, UPSTREAM_PATH, head_held)
        self.cache_blob(auth="Bearer bob")  # a private repository
        # Alice may read it too, but the proxy does not know yet: a HEAD asks the upstream.
        client = self.get(auth="Bearer alice")
        self.pump()
        [head] = held
        # Meanwhile another blob's fill evicts this one.
        other = BLOB[::-1]
        other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{other_digest}",
                         reply(200, other))
        self.blobs.max_size = len(BLOB)
        self.assertEqual(self.fetch("GET", f"/v2/busybox/blobs/{other_digest}").body, other)
        self.assertNotIn(BLOB_DIGEST, self.blobs)
        head.setHeader(b"content-length", b"%d" % len(BLOB))
        head.finish()
        self.pump()
        response = parse_response(client.value(), "GET")
        self.assertEqual((response.status, response.body), (200, BLOB))
        self.assertEqual([s.method for s in self.blob_requests()], ["GET", "HEAD", "GET"])


class EvictionTests(BlobTestCase):
    def test_an_evicted_blob_loses_its_content_links(self) -> None:
        self.serve_blob()
        mirror = self.mirror
        repo = ("docker.io", "library/busybox")
        self.assertEqual(self.fetch("GET", CLIENT_PATH).body, BLOB)
        self.assertTrue(mirror.access.is_linked(repo, BLOB_DIGEST))
        other = BLOB[::-1]
        other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{other_digest}",
                         reply(200, other))
        mirror.blobs.max_size = len(BLOB)
        self.fetch("GET", f"/v2/busybox/blobs/{other_digest}")
        self.assertNotIn(BLOB_DIGEST, mirror.blobs)
        self.assertFalse(mirror.access.is_linked(repo, BLOB_DIGEST))
        self.assertTrue(mirror.access.is_linked(repo, other_digest))


def ranged(body: bytes) -> Any:
    """An upstream blob handler that honours one C{bytes=first-[last]} Range."""

    def handle(request: Request) -> bytes:
        value = request.getHeader(b"range")
        if value is None:
            request.setHeader(b"content-length", b"%d" % len(body))
            return body
        first_text, _, last_text = value.decode().removeprefix("bytes=").partition("-")
        first = int(first_text)
        last = int(last_text) if last_text else len(body) - 1
        request.setResponseCode(206)
        request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, len(body)))
        return body[first:last + 1]

    return handle


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
        self.assertEqual([s.header("range") for s in self.blob_requests()],
                         [None, "bytes=100-199"])

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
        return [(s.header("range"), s.header("authorization")) for s in self.blob_requests()
                if s.header("range") is not None]

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
        self.assertEqual(self.range_requests(), [(f"bytes={HALF}-{len(BLOB) - 1}",
                                                  "Bearer alice")])
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
        self.range_handler = reply(206, BLOB[HALF - 1:], content_range=f"bytes {HALF - 1}-"
                                   f"{len(BLOB) - 1}/{len(BLOB)}")
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
        entry = self.assertRegistryError(parse_response(client.value(), "GET"), 502,
                                         "UNAVAILABLE")
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
