"""Blobs through the mirror (L{dockerproxy.mirror.blobs.BlobProxy}): hits and misses, upstream
failures shared by waiting clients, blob files that vanish under a running proxy, eviction."""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.web.server import NOT_DONE_YET, Request

from dockerproxy.config import DOCKER_HUB_URL, build_config
from dockerproxy.digests import Digest, parse
from dockerproxy.pull import Pull
from tests.unit.mirror.mirrorsite import (
    BLOB,
    BLOB_DIGEST,
    CLIENT_PATH,
    UPSTREAM_PATH,
    BlobTestCase,
    MirrorTestCase,
)
from tests.unit.proxysite import HUB_HOST, ScriptedHTTP, parse_response, reply


class BlobStatsTests(MirrorTestCase):
    def test_each_blob_request_counts_one_hit_or_miss(self) -> None:
        data = b"layer bytes" * 100
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = f"/v2/library/busybox/blobs/{digest}"
        self.upstream.on(HUB_HOST, path, reply(200, data, content_type="application/octet-stream"))
        for _ in range(2):
            response = self.fetch("GET", f"/v2/busybox/blobs/{digest}")
            self.assertEqual((response.status, response.body), (200, data))
        blobs = self.mirror.blobs
        self.assertEqual((blobs.misses, blobs.hits), (1, 1))
        self.assertEqual(len(self.upstream_calls()), 1)


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
        self.assertEqual(
            [s.header("authorization") for s in self.blob_requests()],
            ["Bearer alice", "Bearer bob"],
        )


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
        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{other_digest}", reply(200, other))
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
        self.upstream.on(HUB_HOST, f"/v2/library/busybox/blobs/{other_digest}", reply(200, other))
        mirror.blobs.max_size = len(BLOB)
        self.fetch("GET", f"/v2/busybox/blobs/{other_digest}")
        self.assertNotIn(BLOB_DIGEST, mirror.blobs)
        self.assertFalse(mirror.access.is_linked(repo, BLOB_DIGEST))
        self.assertTrue(mirror.access.is_linked(repo, other_digest))


class Tier:
    """A blob source between the local cache and the upstream: answers with C{body} or,
    without one, declines."""

    def __init__(self, body: bytes | None) -> None:
        self.body = body
        self.asked: list[tuple[bytes, Digest]] = []

    async def serve(self, pull: Pull, digest: Digest) -> bool:
        self.asked.append((pull.request.method, digest))
        if self.body is None:
            return False
        pull.request.setHeader(b"content-length", b"%d" % len(self.body))
        pull.request.write(self.body)
        pull.request.finish()
        return True


class SourceChainTests(BlobTestCase):
    """The blob sources are asked in turn: the local cache, the tiers, then the upstream."""

    def add_tier(self, body: bytes | None) -> Tier:
        tier = Tier(body)
        self.mirror.blob_proxy.sources.insert(1, tier)
        return tier

    def test_a_declining_tier_leaves_the_blob_to_the_upstream(self) -> None:
        self.serve_blob()
        tier = self.add_tier(None)
        response = self.fetch("GET", CLIENT_PATH)
        self.assertEqual((response.status, response.body), (200, BLOB))
        self.assertEqual(tier.asked, [(b"GET", parse(BLOB_DIGEST))])
        self.assertEqual(len(self.blob_requests()), 1)
        self.assertEqual(self.fetch("GET", CLIENT_PATH).body, BLOB)
        self.assertEqual(self.access[-1]["cache"], "hit")
        self.assertEqual(len(tier.asked), 1, "a local hit asks nothing further")
        self.assertEqual(len(self.blob_requests()), 1)

    def test_a_tier_that_answers_ends_the_chain(self) -> None:
        self.serve_blob()
        tier = self.add_tier(b"from the tier")
        response = self.fetch("GET", CLIENT_PATH)
        self.assertEqual((response.status, response.body), (200, b"from the tier"))
        self.assertEqual(len(tier.asked), 1)
        self.assertEqual(self.blob_requests(), [])
