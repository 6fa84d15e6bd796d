"""Anonymous tokens one worker handed out, known to the others through the cache
directory (L{dockerproxy.cache.tokenmarks}), and what that changes for their access
records: a refusal learned with such a token is shared as an anonymous one."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.access import AccessCache, credential_key
from dockerproxy.cache.tokenmarks import SWEEP, TokenMarks
from tests.unit.fakes import scratch_dir, sync_disk
from tests.unit.records import MemoryRecords

TOKEN = "eyJ.anonymous.token"
BEARER = b"Bearer " + TOKEN.encode()
REPO = ("docker.io", "library/alpine")


class TokenMarksTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = scratch_dir(self)
        self.clock = Clock()
        self.clock.advance(1_000_000)
        records = MemoryRecords(shared=True)
        self.a, self.b = (
            AccessCache(self.clock, records=records, marks=self.marks()) for _ in range(2)
        )

    def marks(self) -> TokenMarks:
        return TokenMarks(self.root, sync_disk(), self.clock)

    def test_a_token_one_worker_handed_out_is_anonymous_to_the_other(self) -> None:
        self.assertFalse(self.b.is_anonymous(BEARER))
        self.a.note_anonymous_token(TOKEN, 300)
        self.assertTrue(self.b.is_anonymous(BEARER))
        self.assertFalse(self.b.is_anonymous(b"Bearer someone-elses"))
        self.clock.advance(301)
        self.assertFalse(self.b.is_anonymous(BEARER), "expired")
        self.assertEqual(
            [path.name for path in (self.root / "tokens").iterdir()],
            [credential_key(BEARER)],
            "the credential's hash, never the token",
        )

    def test_a_refusal_with_it_revokes_the_public_record_for_both(self) -> None:
        """b learns the refusal with a token a handed out; a stops serving from cache."""
        self.a.note_served(None, REPO, "sha256:" + "a" * 64)
        self.a.note_anonymous_token(TOKEN, 300)
        self.clock.advance(1)
        self.b.note_refused(BEARER, REPO)  # the repository went private upstream
        self.assertTrue(self.a.may_read(None, REPO), "a has not read the records yet")
        self.successResultOf(Deferred.fromCoroutine(self.a.refresh(REPO)))
        self.assertFalse(self.a.may_read(None, REPO))

    def test_expired_marks_are_swept_and_the_oldest_past_the_bound(self) -> None:
        marks = TokenMarks(self.root, sync_disk(), self.clock, limit=2)
        now = self.clock.seconds()
        for name, expiry in (("expired", now - 1), ("first", now + 100), ("second", now + 200)):
            marks.mark(name, expiry)
        marks.mark("third", now + 300)
        self.assertEqual(marks.sweep(now), 2)
        names = sorted(p.name for p in (self.root / "tokens").iterdir())
        self.assertEqual(names, ["second", "third"])

    def test_a_sweep_runs_after_a_mark_once_it_is_due(self) -> None:
        marks = TokenMarks(self.root, sync_disk(), self.clock)
        marks.mark("expiring", self.clock.seconds() + 1)
        self.clock.advance(SWEEP)
        marks.mark("new", self.clock.seconds() + 300)
        self.assertEqual([p.name for p in (self.root / "tokens").iterdir()], ["new"])
