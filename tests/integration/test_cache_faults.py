"""The pull-through cache when the outside world misbehaves: an upstream that never answers,
blob files removed under a running proxy, a cache disk that fills up mid-download.

Same real parts as test_cache (docker-registry with token auth, skopeo, the proxy as a twistd
process) plus a silent upstream (a TCP listener that accepts and never answers) and a cache
directory on a small tmpfs.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import largeblobs, web
from tests.harness.caching import (
    BackgroundFetch,
    MiB,
    anonymous_token,
    assert_fetched_from_upstream,
    cache_events,
    committed_blobs,
    fetch_blob,
    mirror_of,
    no_images,
    partials,
)
from tests.harness.gate import Gate
from tests.harness.polling import wait_until
from tests.harness.ports import HOST
from tests.harness.proxy import StartProxy
from tests.harness.pulls import assert_same_image, copy
from tests.harness.rawserver import RawServer
from tests.harness.upstream import UpstreamFactory

GiB = 1 << 30


class EndlessUpstream(RawServer):
    """Answers every request with a 200 whose chunked body never ends (capped at 2 GiB, so a
    broken proxy cannot keep a test busy for good); ``sent`` counts each connection's bytes."""

    CAP = 2 << 30

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.closed_by_peer: list[bool] = []
        super().__init__(self._accept)

    def _accept(self, conn: socket.socket) -> None:
        self.sent.append(0)
        self.closed_by_peer.append(False)
        self.spawn(self._serve, conn, len(self.sent) - 1)

    def _serve(self, conn: socket.socket, index: int) -> None:
        chunk = b"%x\r\n" % MiB + b"\xa5" * MiB + b"\r\n"
        with conn:
            conn.settimeout(30)
            try:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                while self.sent[index] < self.CAP and not self.stopping:
                    conn.sendall(chunk)
                    self.sent[index] += MiB
            except OSError:
                self.closed_by_peer[index] = True


@pytest.fixture
def endless_upstream() -> Iterator[EndlessUpstream]:
    with EndlessUpstream() as upstream:
        yield upstream


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 30 MB tmpfs for the cache directory, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root)")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        # A proxy still running (its fixture ends later) keeps the mount busy: detach it.
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


def fill_up(directory: Path) -> Path:
    """Write a file into ``directory`` until its filesystem is full."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * MiB)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return ballast


@pytest.fixture
def silent_upstream() -> Iterator[RawServer]:
    """An upstream that accepts connections, holds them open and never answers."""
    with RawServer() as upstream:
        yield upstream


# -- 1. an upstream that never answers ----------------------------------------------------------


def test_clients_waiting_on_a_silent_upstream_share_one_request_and_its_504(
    start_proxy: StartProxy, silent_upstream: RawServer, tmp: Path
) -> None:
    """Six clients, one uncached blob, an upstream that accepts and never answers: one
    upstream connection, and every client gets the same 504 (before, each waiter made its
    own request once the previous one had timed out: the sixth waited six timeouts)."""
    proxy = start_proxy(
        "--upstream",
        silent_upstream.url,
        "--no-presets",
        "--headers-timeout",
        "3",
        "--cache-dir",
        str(tmp / "cache"),
    )
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


# -- 2. a blob file removed under the running proxy ---------------------------------------------


def test_a_blob_pruned_beside_the_running_proxy_is_fetched_again(
    start_proxy: StartProxy, make_upstream: UpstreamFactory, tmp: Path
) -> None:
    """``python -m dockerproxy.cache prune`` deletes committed blobs beside a live proxy, whose
    index still lists them: the next GET is a miss from the upstream (it was a 500)."""
    up = make_upstream(seed=no_images)
    name = f"public/pruned-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, 3 * MiB, seed="pruned")
    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, up.url, cache)
    token = anonymous_token(proxy, name)
    first = fetch_blob(proxy, name, blob.digest, token)
    assert (first.status, first.digest, first.error) == (200, blob.digest, None)
    assert committed_blobs(cache) == {blob.digest: blob.size}

    pruned = subprocess.run(
        [
            sys.executable,
            "-m",
            "dockerproxy.cache",
            "prune",
            "--cache-dir",
            str(cache),
            "--max-size",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=60,
        check=True,
    )
    assert "removed 1 blobs" in pruned.stdout, pruned
    assert committed_blobs(cache) == {}

    assert_fetched_from_upstream(proxy, up, name, blob, token)
    assert committed_blobs(cache) == {blob.digest: blob.size}
    assert "Traceback" not in proxy.log_text()


# -- 3. a body of unknown length that never ends ------------------------------------------------


@pytest.mark.parametrize("client", ["follows", "leaves"])
def test_an_endless_chunked_body_stops_at_the_cache_bound(
    start_proxy: StartProxy, endless_upstream: EndlessUpstream, tmp: Path, client: str
) -> None:
    """A chunked blob body that never ends is cut off where the cache's bound is, whether its
    client follows it or has left (it used to go on: 12 GB with ``--cache-max-size 50MB``),
    and the client never sees a body that ends as if complete."""
    bound = 20 * MiB
    cache = tmp / "cache"
    proxy = start_proxy(
        "--upstream",
        endless_upstream.url,
        "--no-presets",
        "--cache-dir",
        str(cache),
        "--cache-max-size",
        str(bound),
    )
    conn = http.client.HTTPConnection(HOST, proxy.port, timeout=60)
    conn.request("GET", f"/v2/library/endless/blobs/sha256:{'e' * 64}")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("transfer-encoding") == "chunked"
    received = len(response.read(MiB))
    if client == "leaves":
        conn.close()
    else:
        with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
            while data := response.read(MiB):
                received += len(data)
        conn.close()
        assert received < bound
    assert wait_until(
        lambda: bool(endless_upstream.closed_by_peer) and endless_upstream.closed_by_peer[0], 60
    ), endless_upstream.sent
    # The proxy stopped reading at the bound; kernel buffers hold a few MiB more.
    assert endless_upstream.sent[0] < 2 * bound, endless_upstream.sent
    assert "more than the cache can keep" in proxy.log_text()
    assert committed_blobs(cache) == {}
    assert wait_until(lambda: partials(cache) == []), partials(cache)


# -- 4. the cache's disk is full ----------------------------------------------------------------


def test_a_full_disk_mid_fill_hands_every_client_to_the_upstream(
    small_disk: Path,
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    gate_factory: Callable[[int, int], Gate],
    tmp: Path,
) -> None:
    """The cache's disk fills up while two clients follow a fill, at different places: the
    fill is abandoned, and each client gets the rest of the blob from the upstream with a
    Range request of its own; both bodies arrive whole. Once there is room, the blob is
    cached as usual."""
    up = make_upstream(seed=no_images)
    name = f"public/full-disk-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, 20 * MiB, seed="full-disk")
    gate = gate_factory(up.port, 8 * MiB)
    proxy = mirror_of(start_proxy, gate.url, small_disk)
    token = anonymous_token(proxy, name)
    mark = up.log_mark()

    slow = BackgroundFetch(proxy, name, blob.digest, token, hold=True)
    fast = BackgroundFetch(proxy, name, blob.digest, token)
    for client in (slow, fast):
        client.start()
    try:
        assert gate.wait_holding(30), "the upstream body never reached the gate's hold point"
        assert slow.first_mib.wait(30) and fast.first_mib.wait(30)
        assert len(partials(small_disk)) == 1, "the fill should be in progress"
        ballast = fill_up(small_disk)
        gate.release()  # the fill's next write finds the disk full
        assert wait_until(lambda: proxy.log_text().count("was abandoned") == 2, 30), (
            proxy.log_text()[-3000:]
        )
    finally:
        gate.release()
        slow.resume.set()
        for client in (slow, fast):
            client.join(120)
    for which, result in (("slow", slow.result), ("fast", fast.result)):
        assert result is not None and result.is_whole(blob), (which, result)
    assert "No space left on device" in proxy.log_text()
    served = [r for r in up.responses(mark) if r.method == "GET" and blob.digest in r.path]
    assert sorted(r.status for r in served) == [200, 206, 206], served
    assert committed_blobs(small_disk) == {}
    assert wait_until(lambda: partials(small_disk) == []), partials(small_disk)

    ballast.unlink()
    again = fetch_blob(proxy, name, blob.digest, token)
    assert (again.status, again.digest, again.error) == (200, blob.digest, None)
    assert committed_blobs(small_disk) == {blob.digest: blob.size}


@pytest.mark.slow
def test_a_gib_blob_through_a_30_mb_cache_disk_arrives_intact(
    small_disk: Path, start_proxy: StartProxy, make_upstream: UpstreamFactory
) -> None:
    """A 1 GiB blob cannot fit on the cache's 30 MB disk: it is relayed, never written."""
    up = make_upstream(seed=no_images)
    name = f"public/gib-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, GiB, seed="gib-small-disk")
    proxy = mirror_of(start_proxy, up.url, small_disk)
    token = anonymous_token(proxy, name)
    result = fetch_blob(proxy, name, blob.digest, token, timeout=300)
    assert result.is_whole(blob) and blob.size == GiB, result
    assert cache_events(proxy)[-1] == (f"/v2/{name}/blobs/{blob.digest}", "uncached")
    assert committed_blobs(small_disk) == {}
    assert partials(small_disk) == []


@pytest.mark.slow
def test_skopeo_pulls_an_image_with_a_gib_layer_through_a_30_mb_cache_disk(
    small_disk: Path, start_proxy: StartProxy, make_upstream: UpstreamFactory, tmp: Path
) -> None:
    up = make_upstream(seed=no_images)
    name = f"public/gib-image-{uuid.uuid4().hex[:8]}"
    image = largeblobs.put_large_image(up.registry, name, "1", GiB, up.pusher, seed="gib-image")
    proxy = mirror_of(start_proxy, up.url, small_disk)
    copy(proxy, image.ref, tmp / "pulled", "--dest-oci-accept-uncompressed-layers")
    assert_same_image(tmp / "pulled", image)
    layer = image.layers[0].digest
    assert (f"/v2/{name}/blobs/{layer}", "uncached") in cache_events(proxy)
    assert image.config.digest in committed_blobs(small_disk), "small blobs are still cached"
    assert partials(small_disk) == []
