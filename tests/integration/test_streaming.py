"""Bodies stream through the real daemon: flat memory, truncation never looks complete."""

from __future__ import annotations

import http.client
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import largeblobs, web
from tests.harness.proxy import StartProxy
from tests.harness.rawserver import RawServer
from tests.harness.upstream import Upstream

GIB = 1 << 30
RSS_LIMIT_MB = 100


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.parametrize("mode", ["--no-cache", "--cache"])
def test_one_gib_blob_keeps_memory_flat(
    start_proxy: StartProxy, upstream: Upstream, mode: str
) -> None:
    """Relayed, or filling the cache while streaming: memory does not grow with the blob."""
    name = f"public/big-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(upstream.registry, name, GIB, seed="rss")
    proxy = start_proxy(
        "--upstream", upstream.url, *(["--no-cache"] if mode == "--no-cache" else [])
    )
    token = web.request("GET", f"{proxy.url}/v2/auth?scope=repository:{name}:pull").json()
    response = web.request(
        "GET",
        f"{proxy.url}/v2/{name}/blobs/{blob.digest}",
        {"Authorization": f"Bearer {token['token']}"},
        digest_body=True,
        timeout=300,
    )
    assert response.status == 200, response
    assert response.length == GIB
    assert response.digest == blob.digest
    assert peak_rss_mb(proxy.pid) < RSS_LIMIT_MB


def promise_1_mb_send_1_kb(conn: socket.socket) -> None:
    with conn:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000000\r\n\r\n" + b"x" * 1024
        )


@pytest.fixture
def truncating_upstream() -> Iterator[str]:
    """An HTTP server that promises a 1 MB body, sends 1 KB, and hangs up."""
    with RawServer(promise_1_mb_send_1_kb) as server:
        yield server.url


@pytest.mark.parametrize(
    "cache,logged",
    [
        ("--no-cache", "upstream body ended early"),
        (None, "blob cache: fill of sha256:" + "0" * 64 + " failed after 1024 bytes"),
    ],
)
def test_truncated_upstream_body_aborts_the_client(
    start_proxy: StartProxy, truncating_upstream: str, cache: str | None, logged: str
) -> None:
    """Relayed or through the cache, a short body never ends as if complete."""
    proxy = start_proxy("--upstream", truncating_upstream, *([cache] if cache else []))
    digest = "sha256:" + "0" * 64
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("GET", f"/v2/library/x/blobs/{digest}")
    # The proxy aborts the connection (a reset), so the client may lose even the status
    # line; what it must never see is a response that ends as if complete.
    with pytest.raises(
        (http.client.IncompleteRead, ConnectionResetError, http.client.RemoteDisconnected)
    ):
        response = conn.getresponse()
        assert response.getheader("content-length") == "1000000"
        response.read()
    conn.close()
    assert logged in proxy.log_text()
