"""The pull-through cache when the outside world misbehaves: an upstream that never answers,
blob files removed under a running proxy, a cache disk that fills up mid-download.

Same real parts as test_cache (docker-registry with token auth, skopeo, the proxy as a twistd
process) plus a silent upstream (a TCP listener that accepts and never answers) and a cache
directory on a small tmpfs.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import web
from tests.harness.ports import HOST
from tests.harness.proxy import ProxyProcess

StartProxy = Callable[..., ProxyProcess]


class SilentUpstream:
    """Accepts TCP connections, counts them, reads what comes and never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self._server = socket.create_server((HOST, 0))
        self._server.settimeout(0.2)
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)  # held open, never answered

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(5)
        for conn in self._open:
            conn.close()


@pytest.fixture
def silent_upstream() -> Iterator[SilentUpstream]:
    upstream = SilentUpstream()
    try:
        yield upstream
    finally:
        upstream.close()


# -- 1. an upstream that never answers ----------------------------------------------------------


def test_clients_waiting_on_a_silent_upstream_share_one_request_and_its_504(
        start_proxy: StartProxy, silent_upstream: SilentUpstream, tmp: Path) -> None:
    """Six clients, one uncached blob, an upstream that accepts and never answers: one
    upstream connection, and every client gets the same 504 (before, each waiter made its
    own request once the previous one had timed out: the sixth waited six timeouts)."""
    proxy = start_proxy("--upstream", silent_upstream.url, "--no-presets", "--headers-timeout",
                        "3", "--cache-dir", str(tmp / "cache"))
    path = f"/v2/library/silent/blobs/sha256:{'5' * 64}"
    results: list[web.Response | BaseException] = []

    def client() -> None:
        try:
            results.append(web.request("GET", proxy.url + path, timeout=60))
        except Exception as e:
            results.append(e)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 6, results
    for result in results:
        assert isinstance(result, web.Response) and result.status == 504, result
        error = result.json()["errors"][0]
        assert error["code"] == "UNAVAILABLE" and silent_upstream.url in error["message"], error
    assert silent_upstream.connections == 1, silent_upstream.connections
