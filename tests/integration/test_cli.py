"""The installed ``dockerproxy`` command, run as operators run it: ``serve`` is the same
service as ``twistd -n dockerproxy`` (it answers, reloads on SIGHUP, exits 0 on SIGTERM),
``check-config`` validates with secrets masked, ``cache`` is ``python -m dockerproxy.cache``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dockerproxy.cache.store import FilesystemStore
from tests.harness.ports import HOST, free_port
from tests.harness.procs import ManagedProcess
from tests.harness.served import answers_reloads_and_stops
from tests.harness.upstream import Upstream

DOCKERPROXY = str(Path(sys.executable).with_name("dockerproxy"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKERPROXY, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_serve_is_the_proxy_and_reloads_and_stops_cleanly(upstream: Upstream, tmp: Path) -> None:
    port = free_port()
    proc = ManagedProcess(
        "serve",
        [
            DOCKERPROXY,
            "serve",
            "--listen",
            f"tcp:{port}:interface={HOST}",
            "--upstream",
            upstream.url,
            "--no-presets",
            "--no-cache",
        ],
        tmp,
        cwd=tmp,
    )
    with proc:
        answers_reloads_and_stops(proc, port)
    assert not (tmp / "twistd.pid").exists(), "no pid file"
    assert "Traceback" not in proc.log_text()


def test_serve_refuses_a_bad_option_in_one_line(tmp: Path) -> None:
    result = run("serve", "--listen", "tcp:notaport", cwd=tmp)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("dockerproxy: --listen: bad endpoint 'tcp:notaport'"), line


def test_check_config_masks_secrets_and_refuses_a_bad_file(tmp: Path) -> None:
    password = tmp / "hub.password"
    password.write_text("hunter2-do-not-print\n")
    config = tmp / "config.toml"
    config.write_text(
        'upstream = "https://registry.test"\npresets = false\n'
        '[registries."registry.test"]\nurl = "https://registry.test"\nusername = "bot"\n'
        f'password_file = "{password}"\n[cache]\ndir = "{tmp / "cache"}"\n'
    )
    good = run("check-config", str(config), cwd=tmp)
    assert good.returncode == 0, good.stderr
    assert 'registries."registry.test".credentials.password = "********"' in good.stdout
    assert f'cache.directory = "{tmp / "cache"}"' in good.stdout
    assert "hunter2" not in good.stdout + good.stderr
    assert not (tmp / "cache").exists(), "checking touches no cache"

    config.write_text(config.read_text() + "[limits]\nmax_connections = 0\n")
    bad = run("check-config", str(config), cwd=tmp)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == (
        "dockerproxy: limits.max_connections: must be a whole number from 1 to 1000000, got 0\n"
    )


def test_cache_is_the_cache_module(tmp: Path) -> None:
    FilesystemStore(tmp / "cache").create()
    args = ("stats", "--cache-dir", str(tmp / "cache"))
    command = run("cache", *args, cwd=tmp)
    module = subprocess.run(
        [sys.executable, "-m", "dockerproxy.cache", *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == module.returncode == 0, command.stderr
    assert command.stdout == module.stdout and "blobs:           0 (0 B)" in command.stdout
