"""Measuring what clients cost a running proxy: RSS and fds from /proc, raw downloads
that stall, trickle or hang up.

Used by the memory tests (tests/integration/test_relay_memory.py, test_cache_memory.py).
Nothing here is timed: waits poll a condition, and RSS is read once it has settled.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dockerproxy.heap import TRIM_DELAY
from tests.harness.ports import HOST, free_port
from tests.harness.proxy import ProxyProcess
from tests.harness.tls import make_ca

MiB = 1 << 20


def rss(pid: int) -> int:
    """The process's resident set (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g}s: {what()}")
        time.sleep(0.1)


def settled_rss(pid: int, window: float = 1.0, timeout: float = 60.0) -> int:
    """RSS once it has moved less than 1 MiB over the last C{window} seconds (the relays
    are all stalled, or all gone and the proxy's heap trimmed)."""
    samples: list[int] = []
    count = int(window / 0.1) + 1

    def settled() -> bool:
        samples.append(rss(pid))
        recent = samples[-count:]
        return len(recent) == count and max(recent) - min(recent) < MiB

    wait_until(settled, timeout, lambda: f"RSS still moving: {samples[-count:]}")
    return samples[-1]


def quiet_rss(pid: int) -> int:
    """RSS once steady for longer than the proxy waits to trim its heap after a response."""
    return settled_rss(pid, window=TRIM_DELAY + 1)


def peak_rss(pid: int, samples: int, period: float = 0.1) -> int:
    """The highest of C{samples} RSS readings C{period} seconds apart."""
    peak = rss(pid)
    for _ in range(samples - 1):
        time.sleep(period)
        peak = max(peak, rss(pid))
    return peak


def start_download(
    port: int, path: str, rcvbuf: int | None = None, tls: ssl.SSLContext | None = None
) -> socket.socket:
    """A raw GET whose response headers have been read (so the proxy is sending the body)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect(), so the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect((HOST, port))
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=HOST)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: no body byte is read here
        data = sock.recv(1)
        assert data, f"connection closed after {head!r}"
        head += data
    assert head.startswith(b"HTTP/1.1 200 "), head
    return sock


def hang_up(sock: socket.socket) -> None:
    """Close with a reset, as a client that dies does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def trickle(socks: list[socket.socket], size: int = 4096, period: float = 0.05) -> Iterator[None]:
    """Read C{size} bytes from each socket every C{period} seconds (~80 KB/s each)."""
    stop = threading.Event()
    for sock in socks:
        sock.setblocking(False)

    def read() -> None:
        while not stop.wait(period):
            for sock in socks:
                with contextlib.suppress(OSError):  # nothing to read yet (SSLWantReadError too)
                    sock.recv(size)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def read_and_hang_up(port: int, path: str, size: int, tls: ssl.SSLContext | None = None) -> None:
    """Download C{size} bytes of C{path}'s body, then hang up."""
    sock = start_download(port, path, tls=tls)
    received = 0
    while received < size:
        data = sock.recv(MiB)
        assert data, f"the body ended after {received} bytes"
        received += len(data)
    hang_up(sock)


def tls_listener(certs: Path) -> tuple[dict[str, object], ssl.SSLContext]:
    """C{start_proxy} keywords for an ssl: listener with a test CA in C{certs}, and a
    client context trusting it."""
    ca = make_ca(certs)
    port = free_port()
    listen = f"ssl:{port}:interface={HOST}:privateKey={ca.server_key}:certKey={ca.server_cert}"
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    return {"port": port, "listen": listen, "scheme": "https"}, context


@dataclass(frozen=True)
class Stall:
    """The proxy's RSS before and while C{clients} clients stalled, and its fds before."""

    before: int
    during: int
    fds: int
    clients: int

    @property
    def per_client(self) -> float:
        return (self.during - self.before) / self.clients

    def __str__(self) -> str:
        return (
            f"{self.per_client / 1024:.0f} KiB per stalled client (RSS "
            f"{self.before / MiB:.1f} -> {self.during / MiB:.1f} MiB with {self.clients})"
        )


def stall_clients(
    proxy: ProxyProcess, path: str, clients: int, tls: ssl.SSLContext | None = None
) -> Stall:
    """Hold C{clients} downloads of C{path} with a 4 KiB receive buffer, half reading
    nothing after the headers and half a trickle; measure; hang them all up."""
    read_and_hang_up(proxy.port, path, 8 * MiB, tls)  # code paths and buffers, warmed up
    fds = open_fds(proxy.pid)
    wait_until(lambda: open_fds(proxy.pid) <= fds, 30, lambda: "warm-up download still open")
    before = quiet_rss(proxy.pid)
    socks = [start_download(proxy.port, path, rcvbuf=4096, tls=tls) for _ in range(clients)]
    try:
        with trickle(socks[: clients // 2]):
            settled_rss(proxy.pid)
            during = peak_rss(proxy.pid, samples=10)
    finally:
        for sock in socks:
            hang_up(sock)
    return Stall(before, during, fds, clients)


def assert_given_back(proxy: ProxyProcess, stall: Stall, margin: int) -> None:
    """The stalled clients' fds close and RSS comes back within C{margin} of before."""
    wait_until(
        lambda: open_fds(proxy.pid) <= stall.fds,
        30,
        lambda: f"{open_fds(proxy.pid)} fds open, {stall.fds} before the clients",
    )
    wait_until(
        lambda: rss(proxy.pid) < stall.before + margin,
        30,
        lambda: (
            f"RSS {rss(proxy.pid) / MiB:.1f} MiB after the clients left, "
            f"{stall.before / MiB:.1f} MiB before them "
            f"({stall.during / MiB:.1f} with them)"
        ),
    )
