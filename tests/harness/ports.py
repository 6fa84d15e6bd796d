"""Free loopback ports and readiness polling for test servers.

Servers are started as separate processes, so tests must pick a port first and then wait until
something accepts connections on it before talking to the server.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse
from collections.abc import Callable

HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _check_alive(alive: Callable[[], str | None] | None) -> None:
    """Fail fast when the server process died instead of waiting for the whole timeout."""
    if alive is not None:
        problem = alive()
        if problem:
            raise RuntimeError(problem)


def wait_for_port(
    port: int,
    timeout: float = 10.0,
    host: str = HOST,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Block until ``host:port`` accepts TCP connections.

    ``alive`` returns an error message when the server process has exited, so that a crashed
    server is reported at once (with its log) rather than as a timeout.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        _check_alive(alive)
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    _check_alive(alive)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s: {last}")


def wait_http(
    url: str,
    timeout: float = 10.0,
    alive: Callable[[], str | None] | None = None,
) -> int:
    """Block until ``url`` answers any HTTP response (401 counts) and return its status.

    A listening socket is not enough: some servers accept before they can serve requests.
    """
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        _check_alive(alive)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2.0)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            time.sleep(0.05)
        finally:
            conn.close()
    _check_alive(alive)
    raise TimeoutError(f"{url} did not answer after {timeout}s: {last}")
