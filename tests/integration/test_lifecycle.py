"""The daemon's life as a service manager sees it: a listener it cannot open stops it with one
line and exit status 2. Real twistd processes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.ports import HOST, free_port
from tests.harness.proxy import run_twistd

ROOT = Path(__file__).resolve().parents[2]


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
    status, stderr = run_twistd(read_only_dir, ["--listen", endpoint, "--no-cache"],
                                prefix=prefix, env={"HOME": str(read_only_dir)})
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
    result = subprocess.run([twistd, "--nodaemon", "--pidfile=", "--python",
                             str(ROOT / "proxy.tac")], cwd=tmp, capture_output=True, text=True,
                            timeout=30, env={**os.environ, "DOCKERPROXY_CONFIG": str(config)})
    assert_one_line(result.returncode, result.stderr, endpoint, "TLS")
    assert "Traceback" not in result.stdout
