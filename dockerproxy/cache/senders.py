"""Senders: one blob file streamed into one client request, as its push producer.

A sender reads by offset from its own file descriptor, opened on a committed blob
or on a fill's partial file, and follows a fill as it grows; bodies of known length to
plain TCP clients go out with C{sendfile()} (L{dockerproxy.cache.sendfile}).
See L{Sender}.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from dockerproxy import internals
from dockerproxy.cache.elsewhere import ElsewhereFill
from dockerproxy.cache.fills import Fallback, Fill
from dockerproxy.cache.sendfile import Sendfile
from dockerproxy.digests import Digest
from dockerproxy.relay import abort_client, client_gone
from dockerproxy.shaping import allowance, charge

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import BlobCache

log = Logger()

# Bytes read from a blob file per write to a client (TLS clients, clients following
# a fill): large enough that the per-chunk Python work is noise, and what a client
# that stops reading holds queued in the proxy (the sender pauses once a chunk is
# written), so far below "a megabyte per stalled client".
READ_CHUNK = 256 * 1024
# Bytes one sender writes before yielding to the reactor, for transports that never
# push back; a real TCP or TLS transport pauses the sender after the first chunk.
TURN_BUDGET = 4 * 1024 * 1024
# Bytes one zero-copy sender hands to sendfile() before it lets the reactor run the
# other connections (it goes on at the socket's next writable event).
SENDFILE_BUDGET = TURN_BUDGET
# sendfile() errors that mean "not for this file or socket": the rest of the body is
# read and written instead. Any other error means the client's connection is broken.
SENDFILE_UNSUPPORTED = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EOVERFLOW, errno.ESPIPE}
)


@implementer(IPushProducer)
class Sender:
    """Streams one blob file into one request, as its push producer.

    Reads by offset from its own file descriptor, opened on the committed blob or
    on a fill's partial file (the descriptor stays valid when the partial is
    renamed into place). While the fill is unverified it never sends the body's
    last byte, or, with the length unknown, the last byte written so far.

    A body of known length going to a plain TCP client, of a committed blob or of
    a followed fill (up to what is written, less the last byte until the commit),
    is sent with L{Sendfile} (no copy through Python); anything else (TLS, a
    chunked body, a file sendfile() refuses) is read and written in
    L{READ_CHUNK}s.
    """

    def __init__(
        self,
        cache: BlobCache,
        request: Request,
        digest: Digest,
        fd: int,
        size: int | None,
        fill: Fill | ElsewhereFill | None,
        byte_range: tuple[int, int | None] | None,
        fallback: Fallback | None = None,
    ) -> None:
        self.cache = cache
        self.request = request
        self.digest = digest
        self.fill = fill
        self.fallback = fallback
        self.done: Deferred[bool] = Deferred()
        self.offset = 0
        self.end: int | None = None  # where the body ends (exclusive), once known
        self._fd: int | None = fd
        self._size = size
        self._range = byte_range
        self._begun = False
        self._paused = False
        self._pumping = False
        self._closed = False
        self._scheduled: IDelayedCall | None = None
        self._sendfile: Sendfile | None = None

    def start(self) -> None:
        if self.fill is not None:
            self.fill._follow(self)
        self.request.registerProducer(self, True)
        # A pipelined request may start while the client's socket buffer is still full:
        # the channel would not tell a producer registered now to pause.
        if internals.channel_waiting(self.request.channel):
            self._paused = True
        self.request.notifyFinish().addErrback(lambda _: self._client_gone())
        if self._size is not None:
            self._begin(self._size)
        elif self._range is None and self.request.method != b"HEAD":
            self._begun = True  # a body of unknown length: chunked, ends when the fill does
        if not self._closed and self.end is not None and self.offset < self.end:
            self._sendfile = Sendfile.for_request(self.request)
        self._pump()

    def _begin(self, size: int) -> None:
        """Set Content-Length (and 206 and Content-Range) once the blob's size is known."""
        self._begun = True
        request = self.request
        if self._range is None:
            self.offset, self.end = 0, size
            request.setHeader(b"content-length", b"%d" % size)
        else:
            first, last = self._range
            if first >= size:
                request.setResponseCode(416)
                request.setHeader(b"content-range", b"bytes */%d" % size)
                request.setHeader(b"content-length", b"0")
                self._finish()
                return
            last = size - 1 if last is None else min(last, size - 1)
            self.offset, self.end = first, last + 1
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, size))
            request.setHeader(b"content-length", b"%d" % (last + 1 - first))
        if request.method == b"HEAD":
            self._finish()

    # IPushProducer: the client's transport (through the channel) drives these.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._client_gone()

    # The fill drives these.

    def fill_progressed(self) -> None:
        self._pump()

    def fill_ended(self, ok: bool) -> None:
        assert self.fill is not None
        if not ok:
            if self.fill.abandoned and self.fallback is not None:
                self._hand_off(self.fallback)
            else:
                self._abort(f"the fill failed: {self.fill.failure}")
            return
        if not self._begun:
            self._begin(self.fill.written)
        elif self.end is None:
            self.end = self.fill.written
        self._pump()

    # ---------------------------------------------------------------------------

    def _limit(self) -> int:
        """How far the body may be sent now."""
        fill = self.fill
        if fill is not None and not fill.committed and fill.failure is None and fill.active:
            if self.end is None:
                return fill.written - 1
            return min(fill.written, self.end - 1)
        return self.end if self.end is not None else self.offset

    def _pump(self) -> None:
        if self._closed or self._paused or self._pumping or not self._begun:
            return
        self._pumping = True
        try:
            if self._sendfile is not None and self._send_zero_copy():
                return
            self._send_copies()
        finally:
            self._pumping = False

    def _send_copies(self) -> None:
        """Read the file and write it to the request until paused, done or out of budget."""
        budget = TURN_BUDGET
        while not self._paused and not self._closed:
            limit = self._limit()
            if self.offset >= limit:
                if self.end is not None and self.offset >= self.end and self._verified():
                    self._finish()
                return
            if budget <= 0:
                self._schedule()
                return
            assert self._fd is not None
            size = min(READ_CHUNK, limit - self.offset, allowance(self.request) or READ_CHUNK)
            data = os.pread(self._fd, size, self.offset)
            if not data:
                self._abort("the blob file is shorter than its size")
                return
            self.offset += len(data)
            budget -= len(data)
            self.cache.bytes_served += len(data)
            self.request.write(data)

    def _send_zero_copy(self) -> bool:
        """sendfile() the body, of a committed blob or, up to L{_limit}, of a followed
        fill; C{False} to go on with copies instead.

        Runs only with the transport's buffer empty: after the headers (written
        through the transport) are flushed, and after each wait for the socket.
        """
        sendfile = self._sendfile
        assert sendfile is not None and self.end is not None and self._fd is not None
        request = self.request
        if not request.startedWriting:
            request.write(b"")  # the status line and headers, into the transport's buffer
            if request.chunked:  # no Content-Length (never for a committed blob): framed
                self._sendfile = None
                return False
        budget = SENDFILE_BUDGET
        while True:
            limit = self._limit()  # a followed fill: what is in the file, less its last byte
            if self.offset >= limit:
                break
            if budget <= 0 or sendfile.buffered():
                self._wait_for(sendfile)
                return True
            count = min(limit - self.offset, budget, allowance(request) or budget)
            try:
                sent = sendfile.send(self._fd, self.offset, count)
            except OSError as e:
                if e.errno in SENDFILE_UNSUPPORTED:
                    log.info(
                        "blob cache: sendfile() refused {digest}: {error}; copying",
                        digest=self.digest,
                        error=e,
                    )
                    self._sendfile = None
                    return False
                if isinstance(e, ConnectionError) or e.errno in (errno.ENOTCONN, errno.ETIMEDOUT):
                    self._connection_broken()  # the client went away: nothing to report
                else:
                    self._abort(f"sendfile() failed: {e}")  # e.g. EIO reading the file
                return True
            if sent is None:  # the socket is full
                self._wait_for(sendfile)
                return True
            if sent == 0:
                self._abort("the blob file is shorter than its size")
                return True
            self.offset += sent
            budget -= sent
            self.cache.bytes_served += sent
            request.sentLength += sent  # request.write() counts its bytes; this is ours
            charge(request, sent)  # and may pause this sender, for the client's bandwidth
            if self._paused:
                return True
            if sent < count:  # the socket filled up: a further call would only fail
                self._wait_for(sendfile)
                return True
        if self.offset >= self.end and self._verified():
            self._finish()
        return True  # or the fill tells of more bytes, or of its end

    def _hand_off(self, fallback: Fallback) -> None:
        """The fill was abandoned: the rest of the answer comes from C{fallback}, from
        where this client is (or, before anything was decided, all of it)."""
        begun, first = self._begun, self.offset
        last = None if self.end is None else self.end - 1
        if not self._close():
            return
        log.info(
            "blob cache: the fill of {digest} was abandoned; the response goes on "
            "elsewhere after {offset} bytes",
            digest=self.digest,
            offset=first,
        )
        handed = fallback.rest(first, last) if begun else fallback.whole()
        handed.addCallback(self.done.callback)

    def _wait_for(self, sendfile: Sendfile) -> None:
        if not sendfile.wait_for_drain():
            self._connection_broken()

    def _verified(self) -> bool:
        return self.fill is None or (not self.fill.active and self.fill.failure is None)

    def _schedule(self) -> None:
        if self._scheduled is None:
            self._scheduled = self.cache.clock.callLater(0, self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._scheduled = None
        self._pump()

    def _close(self) -> bool:
        """Release the file, the pin and the fill; C{False} if already done."""
        if self._closed:
            return False
        self._closed = True
        self._sendfile = None
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.fill is not None:
            self.fill._unfollow(self)
        request = self.request
        if request.producer is self:
            if request.channel is not None:
                request.unregisterProducer()
            else:  # the client is gone: Request.connectionLost dropped the channel
                request.producer = None
        self.cache._unpin(self.digest)
        return True

    def _finish(self) -> None:
        if not self._close():
            return
        if not self.request.finished and not client_gone(self.request):
            self.request.finish()
        self.done.callback(True)

    def _abort(self, why: str) -> None:
        if not self._close():
            return
        log.warn(
            "blob cache: aborting the response for {digest} after {offset} bytes: {why}",
            digest=self.digest,
            offset=self.offset,
            why=why,
        )
        abort_client(self.request)
        self.done.callback(False)

    def _connection_broken(self) -> None:
        """The client's socket failed under sendfile() (reset, closed): drop the connection."""
        if self._close():
            abort_client(self.request)
            self.done.callback(False)

    def _client_gone(self) -> None:
        if self._close():
            self.done.callback(False)
