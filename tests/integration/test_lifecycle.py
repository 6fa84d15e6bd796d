"""The daemon's life as a service manager sees it: a listener it cannot open stops it with one
line and exit status 2; SIGTERM stops it gracefully (no new connections, responses under way
finish within --drain-timeout, what is left is cut and leaves nothing half-written), exit 0.

Real twistd processes, the session's token-auth docker-registry, a gate that holds an upstream
body mid-way, and http.client readers.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import largeblobs
from tests.harness.caching import (
    BackgroundFetch,
    MiB,
    anonymous_token,
    committed_blobs,
    committed_path,
    partials,
)
from tests.harness.gate import Gate
from tests.harness.images import Blob
from tests.harness.polling import wait_until
from tests.harness.ports import HOST, free_port
from tests.harness.proxy import ProxyProcess, StartProxy, run_twistd
from tests.harness.upstream import Upstream

ROOT = Path(__file__).resolve().parents[2]
GiB = 1 << 30
RATE = 200 * MiB  # bytes a second the slow client reads: a 1 GiB pull lasts about 5 s
DEFAULT_DRAIN = 30.0  # --drain-timeout's default


# -- a listener that cannot be opened ------------------------------------------------------------


def assert_one_line(status: int, stderr: str, endpoint: str, reason: str) -> None:
    lines = stderr.strip().splitlines()
    assert status == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("dockerproxy: --listen: ") and repr(endpoint) in lines[0], stderr
    assert reason in lines[0], stderr


def test_a_port_in_use_stops_the_proxy_with_one_line(tmp: Path) -> None:
    with socket.create_server((HOST, 0)) as taken:
        endpoint = f"tcp:{taken.getsockname()[1]}:interface={HOST}"
        status, stderr = run_twistd(tmp, ["--listen", endpoint, "--no-cache"])
    assert_one_line(status, stderr, endpoint, "Address already in use")


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A directory nobody but root may create files in (world-readable, for ``nobody``)."""
    path = Path(tempfile.mkdtemp(prefix="dockerproxy-ro-"))
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def test_no_permission_to_listen_stops_the_proxy_with_one_line(read_only_dir: Path) -> None:
    """A socket where the proxy's user may not create one (as root, run as ``nobody``)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) runs the proxy as nobody"
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    endpoint = f"unix:{read_only_dir / 'proxy.sock'}"
    status, stderr = run_twistd(
        read_only_dir,
        ["--listen", endpoint, "--no-cache"],
        prefix=prefix,
        env={"HOME": str(read_only_dir)},
    )
    assert_one_line(status, stderr, endpoint, "Permission denied")
    assert not (read_only_dir / "proxy.sock").exists()


def bad_certificate(tmp: Path) -> str:
    pem = tmp / "broken.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    return f"ssl:{free_port()}:interface={HOST}:privateKey={pem}:certKey={pem}"


def test_a_bad_certificate_file_stops_the_proxy_with_one_line(tmp: Path) -> None:
    endpoint = bad_certificate(tmp)
    status, stderr = run_twistd(tmp, ["--listen", endpoint, "--no-cache"])
    assert status == 2, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("dockerproxy: --listen: ") and repr(endpoint) in line, stderr


def test_a_bad_listener_from_proxy_tac_stops_it_with_one_line(tmp: Path) -> None:
    """proxy.tac reads listen from the config file: the same line, when the listener starts."""
    endpoint = bad_certificate(tmp)
    config = tmp / "config.toml"
    config.write_text(f'listen = ["{endpoint}"]\n[cache]\nenabled = false\n')
    twistd = str(Path(sys.executable).with_name("twistd"))
    result = subprocess.run(
        [twistd, "--nodaemon", "--pidfile=", "--python", str(ROOT / "proxy.tac")],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "DOCKERPROXY_CONFIG": str(config)},
    )
    assert_one_line(result.returncode, result.stderr, endpoint, "TLS")
    assert "Traceback" not in result.stdout


# -- SIGTERM: a graceful stop -------------------------------------------------------------------


class SlowPull(threading.Thread):
    """GETs a blob at about RATE bytes a second, hashing it; ``received`` grows as it reads."""

    def __init__(self, proxy: ProxyProcess, name: str, digest: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url = f"/v2/{name}/blobs/{digest}"
        self.port = proxy.port
        self.token = token
        self.received = 0
        self.status = 0
        self.digest = ""
        self.error: BaseException | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        sha = hashlib.sha256()
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        started = time.monotonic()
        try:
            conn.request("GET", self.url, headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            self.status = response.status
            while chunk := response.read(MiB):
                sha.update(chunk)
                self.received += len(chunk)
                ahead = self.received / RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # the rate limit, not a wait for anything
            announced = int(response.getheader("content-length") or -1)
            if announced != self.received:
                self.error = http.client.IncompleteRead(b"", announced - self.received)
        except (OSError, http.client.HTTPException) as e:
            self.error = e
        finally:
            conn.close()
            self.digest = "sha256:" + sha.hexdigest()
            self.ended_at = time.monotonic()


@pytest.fixture(scope="module")
def gib_blob(upstream: Upstream) -> tuple[str, Blob]:
    name = f"public/drain-{uuid.uuid4().hex[:8]}"
    return name, largeblobs.put_large_blob(upstream.registry, name, GiB, seed="drain")


def refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def exit_status(proxy: ProxyProcess, timeout: float) -> int:
    assert proxy.proc.proc is not None
    return proxy.proc.proc.wait(timeout)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cache", "no-cache"])
def test_sigterm_lets_a_pull_under_way_finish_then_exits_0(
    start_proxy: StartProxy, upstream: Upstream, gib_blob: tuple[str, Blob], tmp: Path, mode: str
) -> None:
    name, blob = gib_blob
    cache = tmp / "cache"
    proxy = start_proxy(
        "--upstream",
        upstream.url,
        "--no-presets",
        *(["--cache-dir", str(cache)] if mode == "cache" else ["--no-cache"]),
    )
    pull = SlowPull(proxy, name, blob.digest, anonymous_token(proxy, name))
    pull.start()
    assert wait_until(lambda: pull.received >= 64 * MiB, timeout=30), "the pull never started"
    os.kill(proxy.pid, signal.SIGTERM)
    signalled, at_signal = time.monotonic(), pull.received
    assert at_signal < blob.size / 2, "the pull should still have seconds to go"
    assert wait_until(lambda: refused(proxy.port), timeout=5), "still accepting connections"
    pull.join(60)
    assert (pull.status, pull.received, pull.digest, pull.error) == (
        200,
        blob.size,
        blob.digest,
        None,
    )
    status = exit_status(proxy, DEFAULT_DRAIN)
    exited = time.monotonic()
    assert status == 0, proxy.proc.log_tail()
    assert exited - signalled < DEFAULT_DRAIN, "the drain ends with the last response"
    assert "Traceback" not in proxy.log_text()
    if mode == "cache":
        assert committed_blobs(cache) == {blob.digest: blob.size}, "the fill finished, kept"
        assert partials(cache) == []


def test_a_pull_longer_than_the_drain_is_cut_and_leaves_nothing_half_written(
    start_proxy: StartProxy, upstream: Upstream, gate_factory: Callable[[int, int], Gate], tmp: Path
) -> None:
    drain = 2.0
    name = f"public/drain-cut-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(upstream.registry, name, 64 * MiB, seed="drain-cut")
    gate = gate_factory(upstream.port, 16 * MiB)  # the upstream body stops part way
    cache = tmp / "cache"
    proxy = start_proxy(
        "--upstream",
        gate.url,
        "--no-presets",
        "--cache-dir",
        str(cache),
        "--drain-timeout",
        f"{drain:g}",
    )
    token = anonymous_token(proxy, name)
    reader = BackgroundFetch(proxy, name, blob.digest, token, timeout=60)
    reader.start()
    try:
        assert reader.first_mib.wait(30), "no bytes reached the client"
        assert gate.wait_holding(30), "the upstream body never reached the gate's hold point"
        assert len(partials(cache)) == 1, "the fill should be in progress"
        os.kill(proxy.pid, signal.SIGTERM)
        signalled = time.monotonic()
        status = exit_status(proxy, drain + 15)
        exited = time.monotonic()
        reader.join(30)
    finally:
        gate.release()
    cut = reader.result
    assert cut is not None and cut.error is not None and cut.length < blob.size, cut
    assert status == 0, proxy.proc.log_tail()
    assert drain <= exited - signalled < drain + 15
    assert "still open after 2 s (--drain-timeout): 1, aborted" in proxy.log_text()
    assert partials(cache) == [], "the fill's partial file is deleted"
    assert not committed_path(cache, blob.digest).exists()
