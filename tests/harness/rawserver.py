"""A TCP listener on loopback for the peers no HTTP server library would be: an upstream that
accepts and never answers, one that lies about its body, one that only counts who connects,
a forwarder that holds a response mid-body (gate.py).

The accept loop runs on a thread of its own and hands each connection to ``handle`` there
(a handler with more to do than a quick exchange ``spawn``s a thread for it). Every accepted
socket, and every socket a handler ``track``s, is shut down and closed by ``close()`` (or the
context manager), which then joins every thread the server started. Threads only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from tests.harness.ports import HOST

JOIN_TIMEOUT = 10.0


class RawServer:
    """Listens on ``host`` (a free port); ``handle(conn)`` gets each connection.

    Without ``handle`` a connection is held open, never answered, until ``close()``.
    ``peers`` lists the address of every connection accepted, in order.
    """

    def __init__(
        self, handle: Callable[[socket.socket], None] | None = None, host: str = HOST
    ) -> None:
        self.host = host
        self.peers: list[tuple[str, int]] = []
        self._handle = handle
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._server = socket.create_server((host, 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self.spawn(self._accept_loop)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def connections(self) -> int:
        return len(self.peers)

    @property
    def stopping(self) -> bool:
        """True once ``close()`` began: loops in handlers end on it."""
        return self._stop.is_set()

    def track(self, sock: socket.socket) -> None:
        """Have ``close()`` shut down and close ``sock`` too (a handler's own connections)."""
        with self._lock:
            self._sockets.append(sock)

    def spawn(self, target: Callable[..., object], *args: object) -> None:
        """Run ``target(*args)`` on a daemon thread that ``close()`` joins."""
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(JOIN_TIMEOUT)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.track(conn)
            self.peers.append(peer)
            if self._handle is not None:
                try:
                    self._handle(conn)
                except OSError:
                    pass  # the peer went away: the next one is served all the same


def sentinel(host: str = HOST) -> RawServer:
    """A listener that records each connection (``peers``) and closes it at once: a peer the
    proxy must never contact."""
    return RawServer(lambda conn: conn.close(), host)
