"""Workers sharing one cache directory (L{dockerproxy.cache.flocks},
L{dockerproxy.cache.elsewhere}, L{dockerproxy.cache.sharing}).

Each L{Harness} here is one worker: its own BlobCache and lock files opened on the same
directory. C{flock} locks belong to open files, so two of them in one test process lock
each other out exactly as two worker processes do.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.cache.elsewhere import POLL, ElsewhereFill
from dockerproxy.cache.flocks import BUSY, Announced, Claim, FillLocks
from tests.unit.cache.blobharness import BODY, Harness, RecordingFallback, sha256
from tests.unit.fakes import scratch_dir

DIGEST = sha256(BODY)


class ClaimTests(SynchronousTestCase):
    def setUp(self) -> None:
        root = scratch_dir(self)
        (root / "tmp").mkdir()
        self.one, self.other = FillLocks(root / "tmp"), FillLocks(root / "tmp")

    def claim(self, locks: FillLocks) -> Claim:
        claim = locks.claim(DIGEST)
        assert isinstance(claim, Claim), claim
        self.addCleanup(claim.release)
        return claim

    def test_one_claim_per_digest(self) -> None:
        claim = self.claim(self.one)
        self.assertIs(self.other.claim(DIGEST), BUSY)
        self.assertIs(self.other.inspect(DIGEST), BUSY, "claimed, not announced yet")
        claim.announce(len(BODY))
        claim.partial_path.write_bytes(BODY[:10])
        found = self.other.inspect(DIGEST)
        assert isinstance(found, Announced), found
        self.addCleanup(found.close)
        self.assertEqual((found.length, os.fstat(found.partial_fd).st_size), (len(BODY), 10))
        claim.release()
        self.assertIsNone(self.other.inspect(DIGEST))
        self.claim(self.other)

    def test_a_dead_workers_claim_is_free_and_swept(self) -> None:
        dead = self.claim(self.one)
        dead.announce(None)
        dead.partial_path.write_bytes(b"half")
        dies(dead)
        taken = self.claim(self.other)
        self.assertEqual(os.pread(taken.fd, 100, 0), b"", "the old announcement is gone")
        taken.partial_path.write_bytes(b"half again")
        dies(taken)
        alive = self.one.claim(sha256(b"other"))
        assert isinstance(alive, Claim)
        self.addCleanup(alive.release)
        alive.partial_path.write_bytes(b"alive")
        # A restarted worker sweeps: the dead fill's files go, the live one's stay.
        self.assertEqual(FillLocks(self.one.tmp_dir).sweep(), 1)
        self.assertFalse(dead.lock_path.exists() or dead.partial_path.exists())
        self.assertTrue(alive.lock_path.exists() and alive.partial_path.exists())


def dies(claim: Claim) -> None:
    """The worker holding C{claim} is killed: the kernel drops its lock, its files stay."""
    os.close(claim.fd)
    claim.released = True


class FollowElsewhereTests(SynchronousTestCase):
    """Worker B's client follows worker A's fill through the file."""

    def setUp(self) -> None:
        root = scratch_dir(self)
        self.a = Harness(root, shared=True)
        self.b = Harness(root, shared=True, clock=self.a.clock)
        claim = self.a.locks.claim(DIGEST)  # type: ignore[union-attr]
        assert isinstance(claim, Claim)
        self.up = self.a.upstream(BODY, claim=claim)
        assert self.b.cache.sharing is not None
        self.sharing = self.b.cache.sharing

    def test_bytes_follow_and_the_last_waits_for_the_commit(self) -> None:
        self.up.sends(BODY[:300])
        self.assertTrue(self.sharing.discover(DIGEST))
        fill = self.b.cache.fill_for(DIGEST)
        self.assertIsInstance(fill, ElsewhereFill)
        client = self.b.client().served(self.b.cache, DIGEST)
        self.assertEqual(client.header(b"content-length"), b"%d" % len(BODY))
        self.assertEqual(client.body(), BODY[:300])
        self.up.sends(BODY[300:])
        self.assertEqual(client.body(), BODY[:300], "nothing tells B but its clock")
        self.b.clock.advance(POLL)
        self.assertEqual(client.body(), BODY[:-1], "the last byte waits for the commit")
        self.up.ends()
        self.assertEqual(self.up.outcome, [True])
        self.b.clock.advance(POLL)
        self.assertEqual(client.body(), BODY)
        self.assertEqual(client.outcome, [True])
        self.assertIn(DIGEST, self.b.cache, "B's index has the blob A committed")
        self.assertIsNone(self.b.cache.fill_for(DIGEST))
        self.assertEqual(self.b.cache.fills, 0, "B never asked the upstream")

    def test_a_body_that_fails_verification_elsewhere_aborts_the_client(self) -> None:
        self.up.sends(BODY[:300])
        self.assertTrue(self.sharing.discover(DIGEST))
        fallback = RecordingFallback()
        client = self.b.client().served(self.b.cache, DIGEST, fallback=fallback)
        self.up.sends(b"x" * (len(BODY) - 300))  # the wrong bytes: A's fill fails
        self.up.ends()
        self.assertEqual(self.up.outcome, [False])
        self.b.clock.advance(POLL)
        self.assertEqual(fallback.calls, [], "never completed from elsewhere")
        self.assertTrue(client.transport.aborted)
        self.assertEqual(client.outcome, [False])
        self.assertNotIn(DIGEST, self.b.cache)
        self.assertIsNone(self.b.cache.fill_for(DIGEST))

    def test_the_filling_worker_dying_hands_the_client_to_its_fallback(self) -> None:
        self.up.sends(BODY[:300])
        self.assertTrue(self.sharing.discover(DIGEST))
        fallback = RecordingFallback()
        client = self.b.client().served(self.b.cache, DIGEST, fallback=fallback)
        assert self.up.fill.claim is not None
        dies(self.up.fill.claim)
        self.b.clock.advance(POLL)
        self.assertEqual(fallback.calls, [("rest", 300, len(BODY) - 1)])
        self.assertEqual(client.body(), BODY[:300])
        self.assertFalse(client.transport.aborted)

    def test_a_blob_another_worker_committed_is_adopted(self) -> None:
        self.up.sends(BODY)
        self.up.ends()
        self.assertNotIn(DIGEST, self.b.cache)
        self.assertTrue(self.sharing.discover(DIGEST))
        self.assertIn(DIGEST, self.b.cache)
        client = self.b.client().served(self.b.cache, DIGEST)
        self.assertEqual((client.body(), client.outcome), (BODY, [True]))

    def test_a_restarted_worker_leaves_the_other_workers_fill_alone(self) -> None:
        self.up.sends(BODY[:300])
        restarted = Harness(self.a.root, shared=True, clock=self.a.clock)
        self.assertTrue(restarted.locks.partial_path(DIGEST).exists())  # type: ignore[union-attr]
        self.up.sends(BODY[300:])
        self.up.ends()
        self.assertEqual(self.up.outcome, [True])
        self.assertIn(DIGEST, self.a.cache)


class SharedBoundTests(SynchronousTestCase):
    """--cache-max-size holds for the directory, whichever worker filled what."""

    def setUp(self) -> None:
        root = scratch_dir(self)
        bound = len(BODY) * 5 // 2  # room for two and a half blobs
        self.a = Harness(root, max_size=bound, shared=True)
        self.b = Harness(root, max_size=bound, shared=True, clock=self.a.clock)
        self.blobs = [bytes([i]) * len(BODY) for i in range(3)]

    def on_disk(self) -> set[object]:
        return {blob.digest for blob in self.a.store.scan()}

    def test_the_oldest_blob_goes_whichever_worker_filled_it(self) -> None:
        first = self.a.put(self.blobs[0])
        second = self.b.put(self.blobs[1])
        self.assertEqual(self.on_disk(), {first, second})
        third = self.b.put(self.blobs[2])
        self.assertEqual(self.on_disk(), {second, third}, "one bound over both workers")
        # A learns of it when it looks: the blob is gone from its index too.
        client = self.a.client()
        with self.assertRaises(KeyError):
            self.a.cache.serve(client.request, first)
        self.assertNotIn(first, self.a.cache)

    def test_a_blob_another_worker_is_sending_is_not_evicted(self) -> None:
        first = self.a.put(self.blobs[0])
        slow = self.a.client(buffer_size=100)
        slow.served(self.a.cache, first)
        self.assertTrue(slow.transport.paused_producer, "the client is still reading it")
        second = self.b.put(self.blobs[1])
        third = self.b.put(self.blobs[2])
        self.assertEqual(self.on_disk(), {first, third}, "the busy blob was skipped")
        while slow.outcome == []:
            slow.transport.drain()
        self.assertEqual((slow.body(), slow.outcome), (self.blobs[0], [True]))
        self.assertNotIn(second, self.on_disk())
