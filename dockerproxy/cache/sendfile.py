"""Zero-copy sends of a blob file to a plain TCP client, for the blob cache's senders
(L{dockerproxy.cache.senders.Sender})."""

from __future__ import annotations

import errno
import os

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.tcp import Connection
from twisted.web.server import Request

from dockerproxy import internals


class Sendfile:
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
    def for_request(cls, request: Request) -> Sendfile | None:
        """A sender for C{request}'s connection, or C{None} if bytes must be copied."""
        transport = getattr(request.channel, "transport", None)
        if (
            not internals.SENDFILE
            or not hasattr(os, "sendfile")
            or not isinstance(transport, Connection)
            or ISSLTransport.providedBy(transport)
            or getattr(transport, "TLS", False)
        ):
            return None
        return cls(transport)

    def buffered(self) -> int:
        """Bytes waiting in the transport's write buffer (its two buffers, as doWrite sees them)."""
        return internals.buffered(self.transport)

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
        return internals.pause_until_writable(self.transport)
