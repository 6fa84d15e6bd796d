"""A TCP forwarder that can hold upstream responses mid-body, to stop time inside a transfer.

Put it between a proxy and a real upstream (``--upstream gate.url``): every connection is
forwarded to ``127.0.0.1:target_port`` unchanged, but while the gate is closed the bytes
flowing back to the client stop after ``hold_after`` bytes on any one connection, until
``release()``. Small exchanges (pings, tokens, 401s) pass; a large blob body stops part way,
so a test can observe the state in the middle of a transfer (a cache fill that cannot have
finished yet) without racing against a fast loopback.

Threads only (no process); ``close()`` (or the context manager) closes every socket and joins
every thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.harness.ports import HOST
from tests.harness.rawserver import RawServer

RECV = 256 * 1024


class Gate(RawServer):
    """Forwards ``HOST:port`` to ``HOST:target_port``; holds responses past ``hold_after``."""

    def __init__(self, target_port: int, hold_after: int) -> None:
        self.target_port = target_port
        self.hold_after = hold_after
        self._released = threading.Event()
        self._holding = threading.Event()
        self._closed = threading.Event()
        self._client_left = threading.Event()
        super().__init__(self._forward)

    def release(self) -> None:
        """Open the gate for good: every held response continues."""
        self._released.set()

    def wait_holding(self, timeout: float) -> bool:
        """True once some connection has reached ``hold_after`` bytes and is being held."""
        return self._holding.wait(timeout)

    def wait_client_left(self, timeout: float) -> bool:
        """True once a client (the proxy) has closed its side of a connection: it gave up
        on the upstream response."""
        return self._client_left.wait(timeout)

    @property
    def holding(self) -> bool:
        return self._holding.is_set() and not self._released.is_set()

    def close(self) -> None:
        self._closed.set()
        self._released.set()
        super().close()

    # -- internals ----------------------------------------------------------------------------

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)
        self.track(upstream)
        self.spawn(self._pump, client, upstream, False)
        self.spawn(self._pump, upstream, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, gated: bool) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(RECV)
                if not data:
                    if not gated:
                        self._client_left.set()
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if gated and not self._released.is_set() and sent + len(data) > self.hold_after:
                    cut = max(self.hold_after - sent, 0)
                    dst.sendall(data[:cut])
                    sent += cut
                    data = data[cut:]
                    self._holding.set()
                    while not self._released.wait(0.1):
                        pass
                    if self._closed.is_set():
                        return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            if not gated:
                self._client_left.set()
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()
