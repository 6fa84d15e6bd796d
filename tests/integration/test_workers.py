"""C{--workers 2}: one supervisor, two workers on the same listener and cache directory.

The supervisor opens the listener once and hands it to both workers; a worker killed
with SIGKILL is started again, SIGHUP reloads every worker, SIGTERM drains them all
(a pull under way completes) and the supervisor exits 0, and no worker outlives its
supervisor, even one killed with SIGKILL.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import ssl
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.harness import largeblobs, web
from tests.harness.caching import (
    BackgroundFetch,
    MiB,
    anonymous_token,
    committed_blobs,
    committed_path,
    fetch_blob,
    mirror_of,
    no_images,
    partials,
    upstream_gets,
)
from tests.harness.gate import Gate
from tests.harness.images import ImageRecord
from tests.harness.metrics import sample
from tests.harness.polling import wait_until
from tests.harness.ports import HOST, free_port, wait_http
from tests.harness.procs import ManagedProcess, pid_alive
from tests.harness.proxy import StartProxy
from tests.harness.pulls import assert_same_image, copy
from tests.harness.served import answers_reloads_and_stops
from tests.harness.tls import make_ca
from tests.harness.upstream import Upstream, UpstreamFactory, default_policy
from tests.harness.workers import client_connections, live_workers, ready_workers, worker_pids


def test_skopeo_pulls_through_two_workers(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, upstream.url, tmp / "cache", "--workers", "2")
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    for attempt in ("cold", "warm"):
        copy(proxy, "alpine:3.20", tmp / attempt)
        assert_same_image(tmp / attempt, alpine)
    # Both workers accept on the port the supervisor opened.
    assert _lines(proxy.log_text(), f"ProxySite starting on {proxy.port}") == 2
    # The tag, its manifest, the blobs and the public record are the cache directory's:
    # fresh connections reach both workers, and none goes upstream for them.
    mark = upstream.log_mark()
    paths = [
        "/v2/library/alpine/manifests/3.20",
        *(f"/v2/library/alpine/blobs/{d}" for d in alpine.blobs),
    ]
    for _ in range(10):
        for path in paths:
            token = anonymous_token(proxy, "library/alpine")
            headers = [("Authorization", f"Bearer {token}"), ("Accept", alpine.media_type)]
            assert web.request("GET", proxy.url + path, headers).status == 200, path
    assert upstream_gets(upstream, mark) == []


def test_a_killed_worker_is_restarted_and_pulls_go_on(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, upstream.url, tmp / "cache", "--workers", "2")
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    killed = worker_pids(proxy)[1]
    os.kill(killed, signal.SIGKILL)
    assert wait_until(lambda: live_workers(proxy).get(1, killed) != killed), proxy.log_text()
    assert f'"pid": {killed}' in proxy.log_text() and "died" in proxy.log_text()
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 3)
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    for attempt in range(3):  # over fresh connections, whichever worker takes them
        copy(proxy, "alpine:3.20", tmp / f"pull-{attempt}")
        assert_same_image(tmp / f"pull-{attempt}", alpine)


def test_sighup_reloads_every_worker(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    config = tmp / "config.toml"
    config.write_text("[limits]\nmax_connections = 100\n")
    proxy = mirror_of(
        start_proxy, upstream.url, tmp / "cache", "--workers", "2", "--config", str(config)
    )
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    config.write_text("[limits]\nmax_connections = 'lots'\n")
    os.kill(proxy.pid, signal.SIGHUP)
    assert wait_until(lambda: "reload refused" in proxy.log_text()), proxy.log_text()
    assert "reload: configuration applied" not in proxy.log_text()
    config.write_text("[limits]\nmax_connections = 200\n")
    os.kill(proxy.pid, signal.SIGHUP)
    assert wait_until(lambda: proxy.log_text().count("reload: configuration applied") == 2), (
        proxy.log_text()
    )
    assert "reload: passed on to {count} workers" in proxy.log_text()
    assert web.request("GET", f"{proxy.url}/v2/").status == 401


def test_sigterm_drains_every_worker_and_a_pull_under_way_completes(
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    gate_factory: Callable[[int, int], Gate],
    tmp: Path,
) -> None:
    up = make_upstream(seed=no_images)
    name = f"public/drained-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, 64 * MiB, seed="drained")
    gate = gate_factory(up.port, 16 * MiB)
    proxy = mirror_of(start_proxy, gate.url, tmp / "cache", "--workers", "2")
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    workers = worker_pids(proxy)
    token = anonymous_token(proxy, name)
    reader = BackgroundFetch(proxy, name, blob.digest, token)
    reader.start()
    try:
        assert reader.first_mib.wait(30), "no bytes reached the client"
        assert gate.wait_holding(30)
        os.kill(proxy.pid, signal.SIGTERM)
        # The supervisor, then each worker it passes the signal on to.
        assert wait_until(lambda: _lines(proxy.log_text(), "Received SIGTERM") == 3)
    finally:
        gate.release()
        reader.join(60)
    assert reader.result is not None and reader.result.is_whole(blob), reader.result
    assert proxy.proc.proc is not None and proxy.proc.proc.wait(30) == 0, proxy.log_text()
    assert not any(pid_alive(pid) for pid in workers.values())


def test_concurrent_misses_across_workers_make_one_upstream_get(
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    gate_factory: Callable[[int, int], Gate],
    tmp: Path,
) -> None:
    """16 clients of one uncached blob, spread over both workers: one upstream GET, every
    body whole and verified, streamed before the fill ends (the gate holds it)."""
    up = make_upstream(seed=no_images)
    name = f"public/flight-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, 48 * MiB, seed="flight")
    gate = gate_factory(up.port, 16 * MiB)
    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, gate.url, cache, "--workers", "2")
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    token = anonymous_token(proxy, name)
    mark = up.log_mark()
    clients = [BackgroundFetch(proxy, name, blob.digest, token, hold=True) for _ in range(16)]
    for client in clients:
        client.start()
    try:
        assert all(c.first_mib.wait(30) for c in clients), "a client got no bytes"
        held = gate.wait_holding(30) and gate.holding
        # Every client holds its connection open: count them per worker.
        spread = {i: client_connections(pid, proxy.port) for i, pid in worker_pids(proxy).items()}
        committed_early = committed_path(cache, blob.digest).exists()
    finally:
        gate.release()
        for client in clients:
            client.resume.set()
        for client in clients:
            client.join(120)
    assert held and not committed_early, "the fill could not have ended yet"
    assert sum(spread.values()) == 16 and all(spread.values()), spread
    gets = upstream_gets(up, mark, re.escape(blob.digest))
    assert len(gets) == 1, f"{len(gets)} upstream GETs of the blob: {gets}"
    for client in clients:
        assert client.result is not None and client.result.is_whole(blob), client.result
    assert committed_blobs(cache) == {blob.digest: blob.size}
    assert partials(cache) == []


def test_eviction_across_workers_keeps_the_bound_and_spares_a_blob_being_sent(
    start_proxy: StartProxy, make_upstream: UpstreamFactory, tmp: Path
) -> None:
    up = make_upstream(seed=no_images)
    name = f"public/evict-{uuid.uuid4().hex[:8]}"
    blobs = [
        largeblobs.put_large_blob(up.registry, name, 24 * MiB, seed=f"evict-{i}") for i in range(4)
    ]
    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, up.url, cache, "--workers", "2", "--cache-max-size", "60MiB")
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    token = anonymous_token(proxy, name)
    slow = BackgroundFetch(proxy, name, blobs[0].digest, token, hold=True)
    slow.start()
    try:
        assert slow.first_mib.wait(30), "no bytes reached the client"
        assert wait_until(lambda: blobs[0].digest in committed_blobs(cache), 30)
        for blob in blobs[1:]:  # fresh connections, to either worker
            fetched = fetch_blob(proxy, name, blob.digest, token)
            assert fetched.is_whole(blob), fetched
        assert wait_until(lambda: sum(committed_blobs(cache).values()) <= 60 * MiB + 24 * MiB)
        assert blobs[0].digest in committed_blobs(cache), "the blob being sent was evicted"
    finally:
        slow.resume.set()
        slow.join(60)
    assert slow.result is not None and slow.result.is_whole(blobs[0]), slow.result
    # Sent: now it may go, and the bound holds for the whole directory.
    assert wait_until(lambda: sum(committed_blobs(cache).values()) <= 60 * MiB, 20), (
        committed_blobs(cache)
    )
    assert partials(cache) == []


def test_a_refusal_one_worker_learns_stops_the_other_serving_from_cache(
    start_proxy: StartProxy, make_upstream: UpstreamFactory, tmp: Path
) -> None:
    """library/alpine is public and cached through both workers; it turns private
    upstream; once any worker learns it (an anonymous tag revalidation refused, with a
    token either worker handed out), no worker serves it from cache to an anonymous
    client."""
    up = make_upstream()
    alpine = up.images["alpine"]
    assert isinstance(alpine, ImageRecord) and up.tokenserver is not None
    proxy = mirror_of(start_proxy, up.url, tmp / "cache", "--workers", "2", "--tag-ttl", "1")
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    copy(proxy, "alpine:3.20", tmp / "public")
    layer = next(iter(alpine.blobs))
    blob_path = f"/v2/library/alpine/blobs/{layer}"

    def anonymous_status(path: str) -> int:
        """An anonymous client's token and request, each on a fresh connection: either
        worker may hand the token out and either may take the request."""
        token = anonymous_token(proxy, "library/alpine")
        return web.request("GET", proxy.url + path, [("Authorization", f"Bearer {token}")]).status

    # Fresh connections reach both workers: each serves the cached blob.
    assert all(anonymous_status(blob_path) == 200 for _ in range(20))
    assert up.pusher is not None and up.reader is not None
    private = default_policy(up.pusher, up.reader)
    private["anonymous"]["pull"] = ["public/*"]
    up.tokenserver.set_policy(private)

    # Past the tag TTL a worker asks the upstream again, and is refused; the refusal
    # goes into the shared records on the disk pool, a moment after that 401 (and only
    # once that worker knows the token as anonymous: the mark of a token another worker
    # handed out lands on the disk a moment after the token was sent).
    def refusal_learned() -> bool:
        status = anonymous_status("/v2/library/alpine/manifests/3.20")
        return status == 401 and wait_until(lambda: _refusal_recorded(tmp / "cache"), 1)

    assert wait_until(refusal_learned, 20), "no worker recorded the refusal"
    statuses = [anonymous_status(blob_path) for _ in range(20)]
    assert statuses == [401] * 20, statuses


def test_metrics_count_every_workers_requests(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    admin_port = free_port()
    proxy = mirror_of(
        start_proxy,
        upstream.url,
        tmp / "cache",
        *("--workers", "2", "--admin-listen", f"tcp:{admin_port}:interface={HOST}"),
    )
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    for _ in range(30):  # fresh connections: both workers answer some
        assert web.request("GET", f"{proxy.url}/v2/").status == 401

    def pings() -> float:
        metrics = web.request("GET", f"http://{HOST}:{admin_port}/metrics").body.decode()
        return sample(
            metrics, "dockerproxy_requests_total", route="ping", method="GET", status="401"
        )

    assert wait_until(lambda: pings() == 30), pings()


def test_no_worker_outlives_its_supervisor(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, upstream.url, tmp / "cache", "--workers", "2")
    assert wait_until(lambda: ready_workers(proxy.log_text()) == 2), proxy.log_text()
    workers = worker_pids(proxy)
    os.kill(proxy.pid, signal.SIGKILL)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in workers.values()), 20), (
        proxy.log_text()
    )
    assert "the supervisor is gone: this worker stops" in proxy.log_text()


def test_socket_activation_with_workers(upstream: Upstream, tmp: Path) -> None:
    """systemd passes the socket to the supervisor, which hands it to both workers."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "scripts/test.sh installs systemd"
    port = free_port()
    twistd = str(Path(sys.executable).with_name("twistd"))
    argv = [activate, "--listen", f"{HOST}:{port}", "--fdname=http", twistd, "--nodaemon"]
    argv += ["--pidfile=", "dockerproxy", "--listen", "systemd:domain=INET:index=0"]
    argv += ["--upstream", upstream.url, "--no-presets", "--no-cache", "--workers", "2"]
    with ManagedProcess("activated-workers", argv, tmp, cwd=tmp) as proc:
        # systemd-socket-activate starts the supervisor at the first connection.
        wait_http(f"http://{HOST}:{port}/", alive=proc.exit_problem)
        assert wait_until(lambda: ready_workers(proc.log_text()) == 2), proc.log_text()
        answers_reloads_and_stops(proc, port)
        starting = f"ProxySite starting on {port}"
        assert _lines(proc.log_text(), starting) == 2, proc.log_text()


def test_tls_is_each_workers_own(start_proxy: StartProxy, upstream: Upstream, tmp: Path) -> None:
    """An ssl: listener is handed over as TCP; each worker holds the certificate."""
    ca = make_ca(tmp / "ca")
    port = free_port()
    listen = f"ssl:{port}:interface={HOST}:privateKey={ca.server_key}:certKey={ca.server_cert}"
    start_proxy(
        "--upstream",
        upstream.url,
        "--no-presets",
        "--workers",
        "2",
        listen=listen,
        port=port,
        scheme="https",
    )
    trusted = ssl.create_default_context(cafile=str(ca.ca_cert))
    for _ in range(6):  # fresh connections, taken by either worker
        connection = http.client.HTTPSConnection(HOST, port, timeout=10, context=trusted)
        try:
            connection.request("GET", "/v2/")
            assert connection.getresponse().status == 401
        finally:
            connection.close()


def _lines(log: str, text: str) -> int:
    """How many lines of C{log} say C{text} (a JSON line may say it in several fields)."""
    return sum(text in line for line in log.splitlines())


def _refusal_recorded(cache: Path) -> bool:
    """Whether a repository's shared access record holds a refusal."""
    for path in (cache / "meta" / "access").glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("refused"):
            return True
    return False
