"""The blob cache: verified fills from upstream, coalesced followers, LRU eviction.

A fill writes an upstream body to a partial file at upstream speed, hashing as it
goes, and commits it only if its size and digest check out. Clients never slow a
fill down: each one follows the file (a L{_Sender} reading by offset), is told by
the fill when more bytes land, and holds back the body's final byte until the
blob is committed, so a body that then fails verification is aborted and can never
look complete. Every file operation is a plain blocking call in the reactor thread:
acceptable for a local disk, where writes land in the page cache and reads of
recent data come from it. A committed blob going to a plain TCP client is sent
with C{os.sendfile} (L{_Sendfile}), straight from the page cache to the socket.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.server import Request
from zope.interface import implementer

from dockerproxy.cache.store import FilesystemStore, Partial, parse_digest
from dockerproxy.relay import abort_client, enlarge_socket_reads

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
SENDFILE_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                  errno.ENOTSUP, errno.EOVERFLOW, errno.ESPIPE})
DEFAULT_IDLE_TIMEOUT = 60.0


class FillInProgress(RuntimeError):
    """L{BlobCache.start_fill} for a digest that is already being filled."""


@dataclass(frozen=True)
class CachedBlob:
    """A committed, verified blob."""

    digest: str
    size: int
    path: Path


@dataclass
class _Entry:
    size: int
    path: Path


class Fill(Protocol):
    """One upstream body becoming a blob: the protocol given to C{response.deliverBody}.

    Never paused: it reads as fast as the upstream sends, whatever its followers do.
    C{done} fires C{True} once the blob is committed (or verified but too large to
    keep), C{False} if it failed; the partial file is then gone.
    """

    def __init__(self, cache: BlobCache, digest: str, partial: Partial, length: int | None,
                 idle_timeout: float) -> None:
        self.cache = cache
        self.digest = digest
        self.length = length
        self.path = partial.path
        self.written = 0
        self.committed = False
        self.failure: str | None = None
        self.done: Deferred[bool] = Deferred()
        algorithm, self._expected = parse_digest(digest)
        self._hash = hashlib.new(algorithm)
        self._partial = partial
        self._idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None
        self._ended = False
        self._followers: list[_Sender] = []
        self._reserved = 0  # bytes counted against the cache's bound while filling

    @property
    def active(self) -> bool:
        return not self._ended

    @property
    def followers(self) -> int:
        return len(self._followers)

    def connectionMade(self) -> None:
        enlarge_socket_reads(getattr(self.transport, "_producer", None))
        self._idle = self.cache.clock.callLater(self._idle_timeout, self._idle_expired)

    def dataReceived(self, data: bytes) -> None:
        if self._ended:
            return
        if self.length is not None and self.written + len(data) > self.length:
            self._fail(f"more than the announced {self.length} bytes")
            return
        try:
            self._partial.write(data)
        except OSError as e:
            self._fail(f"cannot write {self.path}: {e}")
            return
        self._hash.update(data)
        self.written += len(data)
        if self._idle is not None:
            self._idle.reset(self._idle_timeout)
        for follower in list(self._followers):
            follower.fill_progressed()

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self._cancel_idle()
        if self._ended:
            return
        if reason.check(ResponseDone):
            complete = self.length is None or self.written == self.length
        else:
            # A close-delimited body (no length, no chunking) ends with PotentialDataLoss.
            complete = bool(reason.check(PotentialDataLoss)) and self.length is None
        if not complete:
            self._fail(f"body ended after {self.written} bytes: {reason.getErrorMessage()}",
                       stop_upstream=False)
            return
        actual = self._hash.hexdigest()
        if actual != self._expected:
            self._fail(f"digest mismatch: the body is {self._hash.name}:{actual}",
                       stop_upstream=False)
            return
        self._ended = True
        self.cache._fill_verified(self, self._partial)

    def stop(self, why: str) -> None:
        """Abandon the fill: the partial is deleted and its followers are aborted."""
        if not self._ended:
            self._fail(why)

    def _fail(self, why: str, stop_upstream: bool = True) -> None:
        self._ended = True
        self.failure = why
        self._cancel_idle()
        if stop_upstream and self.transport is not None:
            self.transport.stopProducing()
        try:
            self._partial.discard()
        except OSError as e:
            log.warn("blob cache: cannot remove {path}: {error}", path=str(self.path), error=e)
        self.cache._fill_failed(self, why)

    def _idle_expired(self) -> None:
        self._idle = None
        self._fail(f"no body bytes for {self._idle_timeout:g} seconds")

    def _cancel_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _follow(self, sender: _Sender) -> None:
        self._followers.append(sender)

    def _unfollow(self, sender: _Sender) -> None:
        if sender in self._followers:
            self._followers.remove(sender)

    def _notify_end(self) -> None:
        for follower in list(self._followers):
            follower.fill_ended(self.committed or self.failure is None)


class BlobCache:
    """Committed blobs in a size-bounded LRU index, plus the fills in progress.

    A blob being served or filled is pinned and never evicted, so the bound
    (C{max_size} bytes, C{None} for none) holds except for pinned blobs. A fill
    with a known length counts against the bound from its start.
    """

    def __init__(self, store: FilesystemStore, clock: IReactorTime, max_size: int | None,
                 *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.store = store
        self.clock = clock
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.hits = 0
        self.misses = 0
        self.fills = 0
        self.failed_fills = 0
        self.evictions = 0
        self.bytes_served = 0
        self.coalesced = 0
        self._index: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._last_touched: str | None = None
        self._bytes = 0
        self._reserved = 0
        self._fills: dict[str, Fill] = {}
        self._pins: Counter[str] = Counter()

    # ----------------------------------------------------------------- index

    def start(self) -> None:
        """Load the committed blobs in LRU order (partials of a crash are deleted)."""
        self._index.clear()
        self._bytes = 0
        for blob in self.store.recover():
            self._index[blob.digest] = _Entry(blob.size, self.store.blob_path(blob.digest))
            self._bytes += blob.size
        self._evict()

    def stop(self) -> None:
        """Abandon every fill in progress, e.g. at shutdown: no partial outlives the process."""
        for fill in list(self._fills.values()):
            fill.stop("the cache is stopping")

    @staticmethod
    def supports(digest: str) -> bool:
        """Whether blobs of C{digest} can be cached (a well-formed sha256 or sha512)."""
        try:
            parse_digest(digest)
        except ValueError:
            return False
        return True

    def lookup(self, digest: str) -> CachedBlob | None:
        """The committed blob C{digest}, marked recently used; C{None} (a miss) otherwise."""
        blob = self.get(digest)
        if blob is None:
            self.misses += 1
            return None
        self.hits += 1
        self._mark_used(digest)
        return blob

    def get(self, digest: str) -> CachedBlob | None:
        """The committed blob C{digest}, without counting a hit or miss or marking it used."""
        entry = self._index.get(digest)
        return None if entry is None else CachedBlob(digest, entry.size, entry.path)

    def __contains__(self, digest: object) -> bool:
        return digest in self._index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def used_bytes(self) -> int:
        """Bytes of committed blobs."""
        return self._bytes

    def lru_order(self) -> list[str]:
        """Committed digests, least recently used (next to go) first."""
        return list(self._index)

    def stats(self) -> dict[str, int | None]:
        """The counters and the index's state, for the admin command and metrics."""
        return {"hits": self.hits, "misses": self.misses, "fills": self.fills,
                "failed_fills": self.failed_fills, "evictions": self.evictions,
                "bytes_served": self.bytes_served, "coalesced": self.coalesced,
                "blobs": len(self._index), "used_bytes": self._bytes,
                "max_size": self.max_size, "active_fills": len(self._fills),
                "pinned": len(self._pins)}

    def _mark_used(self, digest: str) -> None:
        """LRU order in memory, and on disk (mtime) for restarts.

        A blob used again right after its own last touch is already the newest on
        disk, so the usual burst of hits on one blob costs one syscall.
        """
        self._index.move_to_end(digest)
        if digest != self._last_touched:
            self._last_touched = digest
            self.store.touch(digest, self.clock.seconds())

    # ----------------------------------------------------------------- fills

    def fill_for(self, digest: str) -> Fill | None:
        return self._fills.get(digest)

    def start_fill(self, digest: str, response: IResponse,
                   idle_timeout: float | None = None) -> Fill:
        """Write C{response}'s body (a 200 from upstream) to the cache, verified by C{digest}.

        Raises L{FillInProgress} if C{digest} is already being filled and
        C{ValueError} for a digest the cache cannot verify or a status other than 200.
        """
        parse_digest(digest)
        if response.code != 200:
            raise ValueError(f"only a 200 response can fill the cache, not {response.code}")
        if digest in self._fills:
            raise FillInProgress(digest)
        length = None if response.length is UNKNOWN_LENGTH else int(response.length)
        fill = Fill(self, digest, self.store.open_partial(), length,
                    self.idle_timeout if idle_timeout is None else idle_timeout)
        self._fills[digest] = fill
        self._pin(digest)
        self.fills += 1
        if length is not None and not self._too_large(length):
            fill._reserved = length
            self._reserved += length
            self._evict()
        try:
            response.deliverBody(fill)
        except BaseException:
            fill.stop("the response body could not be read")
            raise
        return fill

    def _too_large(self, size: int) -> bool:
        return self.max_size is not None and size > self.max_size

    def _fill_verified(self, fill: Fill, partial: Partial) -> None:
        # A blob larger than the whole cache is verified for its followers, never kept:
        # keeping it would evict everything else first.
        if self._too_large(fill.written):
            log.info("blob cache: {digest} ({size} bytes) is larger than the cache",
                     digest=fill.digest, size=fill.written)
            partial.discard()
        else:
            try:
                path = self.store.commit(partial, fill.digest)
            except OSError as e:
                partial.discard()
                fill.failure = f"cannot commit: {e}"
                self._fill_failed(fill, fill.failure)
                return
            previous = self._index.pop(fill.digest, None)
            if previous is not None:
                self._bytes -= previous.size
            self._index[fill.digest] = _Entry(fill.written, path)
            self._bytes += fill.written
            fill.committed = True
            self._mark_used(fill.digest)
        self._end_fill(fill)
        fill.done.callback(True)

    def _fill_failed(self, fill: Fill, why: str) -> None:
        self.failed_fills += 1
        log.warn("blob cache: fill of {digest} failed after {written} bytes: {why}",
                 digest=fill.digest, written=fill.written, why=why)
        self._end_fill(fill)
        fill.done.callback(False)

    def _end_fill(self, fill: Fill) -> None:
        if self._fills.get(fill.digest) is fill:
            del self._fills[fill.digest]
        self._reserved -= fill._reserved
        fill._reserved = 0
        fill._notify_end()
        self._unpin(fill.digest)

    # ----------------------------------------------------------------- serving

    def serve(self, request: Request, digest: str,
              byte_range: tuple[int, int | None] | None = None) -> Deferred[bool]:
        """Send blob C{digest} (committed, or followed while it fills) as C{request}'s body.

        See the package docstring. Raises C{KeyError} if C{digest} is neither
        committed nor being filled, C{ValueError} for a malformed C{byte_range}.
        """
        if byte_range is not None:
            first, last = byte_range
            if first < 0 or (last is not None and last < first):
                raise ValueError(f"bad byte range {byte_range!r}")
        if getattr(request, "_disconnected", False):
            return succeed(False)  # gone already: a producer could never be told
        entry = self._index.get(digest)
        fill = None
        if entry is not None:
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                log.warn("blob cache: {path} vanished", path=str(entry.path))
                self._forget(digest)
                raise KeyError(digest) from None
            size: int | None = entry.size
        else:
            fill = self._fills.get(digest)
            if fill is None:
                raise KeyError(digest)
            fd = os.open(fill.path, os.O_RDONLY | os.O_CLOEXEC)
            size = fill.length
            self.coalesced += 1
        sender = _Sender(self, request, digest, fd, size, fill, byte_range)
        self._pin(digest)
        sender.start()
        return sender.done

    # ----------------------------------------------------------------- eviction

    def _pin(self, digest: str) -> None:
        self._pins[digest] += 1

    def _unpin(self, digest: str) -> None:
        self._pins[digest] -= 1
        if self._pins[digest] <= 0:
            del self._pins[digest]
            self._evict()

    def _evict(self) -> None:
        """Remove least recently used unpinned blobs until the cache is within C{max_size}."""
        if self.max_size is None:
            return
        for digest in list(self._index):
            if self._bytes + self._reserved <= self.max_size:
                return
            if not self._pins[digest]:
                self._forget(digest)
                self.evictions += 1

    def _forget(self, digest: str) -> None:
        entry = self._index.pop(digest)
        self._bytes -= entry.size
        if self._last_touched == digest:
            self._last_touched = None
        try:
            self.store.remove(digest)
        except OSError as e:
            log.warn("blob cache: cannot remove {digest}: {error}", digest=digest, error=e)


@implementer(IPushProducer)
class _Sender:
    """Streams one blob file into one request, as its push producer.

    Reads by offset from its own file descriptor, opened on the committed blob or
    on a fill's partial file (the descriptor stays valid when the partial is
    renamed into place). While the fill is unverified it never sends the body's
    last byte, or, with the length unknown, the last byte written so far.

    A committed blob with a body, going to a plain TCP client, is sent with
    L{_Sendfile} (no copy through Python); anything else (TLS, a followed fill,
    a chunked body, a file sendfile() refuses) is read and written in
    L{READ_CHUNK}s.
    """

    def __init__(self, cache: BlobCache, request: Request, digest: str, fd: int,
                 size: int | None, fill: Fill | None,
                 byte_range: tuple[int, int | None] | None) -> None:
        self.cache = cache
        self.request = request
        self.digest = digest
        self.fill = fill
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
        self._sendfile: _Sendfile | None = None

    def start(self) -> None:
        if self.fill is not None:
            self.fill._follow(self)
        self.request.registerProducer(self, True)
        # A pipelined request may start while the client's socket buffer is still full:
        # the channel would not tell a producer registered now to pause.
        if getattr(self.request.channel, "_waitingForTransport", False):
            self._paused = True
        self.request.notifyFinish().addErrback(lambda _: self._client_gone())
        if self._size is not None:
            self._begin(self._size)
        elif self._range is None and self.request.method != b"HEAD":
            self._begun = True  # a body of unknown length: chunked, ends when the fill does
        if (self.fill is None and not self._closed and self.end is not None
                and self.offset < self.end):
            self._sendfile = _Sendfile.for_request(self.request)
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
        if not ok:
            self._abort("the blob failed verification")
            return
        assert self.fill is not None
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
            data = os.pread(self._fd, min(READ_CHUNK, limit - self.offset), self.offset)
            if not data:
                self._abort("the blob file is shorter than its size")
                return
            self.offset += len(data)
            budget -= len(data)
            self.cache.bytes_served += len(data)
            self.request.write(data)

    def _send_zero_copy(self) -> bool:
        """sendfile() the committed body; C{False} to go on with copies instead.

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
        while self.offset < self.end:
            if budget <= 0 or sendfile.buffered():
                self._wait_for(sendfile)
                return True
            count = min(self.end - self.offset, budget)
            try:
                sent = sendfile.send(self._fd, self.offset, count)
            except OSError as e:
                if e.errno in SENDFILE_UNSUPPORTED:
                    log.info("blob cache: sendfile() refused {digest}: {error}; copying",
                             digest=self.digest, error=e)
                    self._sendfile = None
                    return False
                if isinstance(e, ConnectionError) or e.errno in (errno.ENOTCONN,
                                                                 errno.ETIMEDOUT):
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
            if sent < count:  # the socket filled up: a further call would only fail
                self._wait_for(sendfile)
                return True
        self._finish()
        return True

    def _wait_for(self, sendfile: _Sendfile) -> None:
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
        if not self.request.finished and not getattr(self.request, "_disconnected", False):
            self.request.finish()
        self.done.callback(True)

    def _abort(self, why: str) -> None:
        if not self._close():
            return
        log.warn("blob cache: aborting the response for {digest} after {offset} bytes: {why}",
                 digest=self.digest, offset=self.offset, why=why)
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


class _Sendfile:
    """Zero-copy sends from a file to a plain TCP client's socket, under Twisted's transport.

    C{os.sendfile()} moves file bytes from the page cache to the socket in the
    kernel: no read into a Python buffer, no copy back out, no buffer held while
    the client is slow. L{for_request} only offers it for a L{Connection} (TCP
    or UNIX socket) that is not TLS: a TLS transport has no socket to write
    plaintext to.

    The transport stays the socket's owner, so nothing is ever written past or
    under it:

      - bytes may only be sent with the transport's own write buffer empty
        (L{buffered}), so they never overtake the status line and headers,
        which C{request.write} puts into that buffer;
      - to wait for the socket (the headers still buffered, the socket full
        after a short sendfile(), or a turn's budget used), L{wait_for_drain}
        does what the transport does when its own buffer fills: it marks its
        producer, the HTTPChannel, paused (which pauses the request's producer)
        and asks the reactor for a writable event. There the transport's
        C{doWrite} flushes whatever is buffered and, once empty, resumes the
        channel, which resumes the request's producer: the same path as any
        push producer's. No second reader or writer is registered for the
        socket (the epoll reactor keeps a single object per descriptor).
    """

    def __init__(self, transport: Connection) -> None:
        self.transport = transport

    @classmethod
    def for_request(cls, request: Request) -> _Sendfile | None:
        """A sender for C{request}'s connection, or C{None} if bytes must be copied."""
        transport = getattr(request.channel, "transport", None)
        if (not hasattr(os, "sendfile") or not isinstance(transport, Connection)
                or ISSLTransport.providedBy(transport) or getattr(transport, "TLS", False)):
            return None
        return cls(transport)

    def buffered(self) -> int:
        """Bytes waiting in the transport's write buffer (its two buffers, as doWrite sees them)."""
        t = self.transport
        return len(t.dataBuffer) - t.offset + t._tempDataLen

    def send(self, fd: int, offset: int, count: int) -> int | None:
        """sendfile() up to C{count} bytes of C{fd} from C{offset}: the bytes sent (0 at
        the end of the file), C{None} if the socket is full. Raises C{OSError}."""
        t = self.transport
        if not t.connected or t.disconnecting:
            raise BrokenPipeError(errno.EPIPE, "the connection is closing")
        try:
            return os.sendfile(t.fileno(), fd, offset, count)
        except BlockingIOError:
            return None

    def wait_for_drain(self) -> bool:
        """Resume the request's producer once the socket is writable and the transport's
        buffer is empty; C{False} if the transport can no longer tell it."""
        t = self.transport
        channel = t.producer
        if channel is None or not t.connected or t.disconnecting:
            return False
        t.producerPaused = True
        channel.pauseProducing()
        t.startWriting()
        return True
