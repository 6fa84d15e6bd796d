"""A fill another worker runs, followed here through its partial file.

The worker that claimed a blob (L{dockerproxy.cache.flocks}) writes its partial file
as any fill does; this worker's clients read the same file by offset, as followers
of an L{ElsewhereFill}, which stands in for the L{Fill} they would follow in the
filling worker. Nothing tells this process when bytes land, so it looks: every
L{POLL} seconds (on the cache's clock) it reads the file's size and whether the
claim still stands, and tells its followers. Their rule is a local follower's:
the last byte is held back until the blob is committed. The claim ends with the
blob committed (C{os.replace} keeps the inode: the file open here I{is} the
committed blob) or not: given up (or its worker died), when the followers go on
from their L{Fallback} (a Range request upstream), as the followers of an abandoned
fill do; or failed verification, when they are aborted, as a local fill's are.

It looks only while someone follows it: with the last follower gone its files are
closed, and a later client looks again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from dockerproxy.cache.flocks import FAILED, VERIFIED, Announced, held
from dockerproxy.digests import Digest

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import BlobCache
    from dockerproxy.cache.senders import Sender

POLL = 0.05  # seconds between two looks at another worker's fill


class ElsewhereFill:
    """Another worker's fill of C{digest}, as this worker's clients follow it.

    Its attributes are those of a L{Fill} that its followers read: C{length},
    C{written}, C{committed}, C{failure}, C{abandoned}, L{active}; C{done} fires
    C{True} once the blob is committed, C{False} if it was not.
    """

    def __init__(self, cache: BlobCache, digest: Digest, announced: Announced) -> None:
        self.cache = cache
        self.digest = digest
        self.announced = announced
        self.length = announced.length
        self.path = announced.partial_path
        self.written = 0
        self.committed = False
        self.failure: str | None = None
        self.abandoned = False
        self.done: Deferred[bool] = Deferred()
        self._followers: list[Sender] = []
        self._settled = False
        self._poll: IDelayedCall | None = None

    def start(self) -> None:
        """Look now, then every L{POLL} seconds until the claim ends."""
        self._look()

    @property
    def active(self) -> bool:
        return not self._settled

    @property
    def followers(self) -> int:
        return len(self._followers)

    def open(self) -> int:
        """A descriptor of its own on the file, for a sender (reads by offset)."""
        return os.dup(self.announced.partial_fd)

    def stop(self, why: str) -> None:
        """This worker stops following (its cache stops): its followers are aborted."""
        if not self._settled:
            self._end(committed=False, why=why)

    def _follow(self, sender: Sender) -> None:
        self._followers.append(sender)

    def _unfollow(self, sender: Sender) -> None:
        if sender in self._followers:
            self._followers.remove(sender)
        if not self._followers and not self._settled:
            self._end(committed=False, why="no client follows it here")

    def _look(self) -> None:
        """Tell the followers of new bytes, and of the end of the claim."""
        self._poll = None
        size = os.fstat(self.announced.partial_fd).st_size
        if size > self.written:
            self.written = size
            for follower in list(self._followers):
                follower.fill_progressed()
        if self._settled:
            return
        if held(self.announced.lock_fd):
            self._poll = self.cache.clock.callLater(POLL, self._look)
            return
        self.written = os.fstat(self.announced.partial_fd).st_size
        outcome = self.announced.outcome()
        if self._is_committed() or outcome == VERIFIED:
            self._end(committed=True)
        elif outcome == FAILED:
            self._end(committed=False, why="the body failed verification in another worker")
        else:  # given up, or its worker died: what is in the file is the upstream's
            self.abandoned = True
            self._end(committed=False, why="the worker filling it did not finish it")

    def _is_committed(self) -> bool:
        try:
            blob = os.stat(self.cache.store.blob_path(self.digest))
        except FileNotFoundError:
            return False
        mine = os.fstat(self.announced.partial_fd)
        return (blob.st_dev, blob.st_ino) == (mine.st_dev, mine.st_ino)

    def _end(self, committed: bool, why: str | None = None) -> None:
        self._settled = True
        self.committed = committed
        self.failure = None if committed else why
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None
        self.announced.close()
        if self.cache.sharing is not None:
            self.cache.sharing.ended(self)
        for follower in list(self._followers):
            follower.fill_ended(committed)
        self.done.callback(committed)
