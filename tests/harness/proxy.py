"""The dockerproxy daemon as a real process: ``twistd --nodaemon dockerproxy ...``.

It runs from a scratch directory (not the checkout), so the twistd plugin must come from the
installed package, as it does for users.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.harness.ports import HOST, free_port
from tests.harness.procs import ManagedProcess


def twistd_argv(*args: str) -> list[str]:
    """``twistd --nodaemon --pidfile= dockerproxy ARGS``, the twistd beside this Python."""
    twistd = str(Path(sys.executable).with_name("twistd"))
    return [twistd, "--nodaemon", "--pidfile=", "dockerproxy", *args]


class ProxyProcess:
    """A started dockerproxy; C{url} is where clients reach it."""

    def __init__(self, proc: ManagedProcess, port: int, scheme: str) -> None:
        self.proc = proc
        self.port = port
        self.scheme = scheme

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.proc.log_text()

    def access_events(self) -> list[dict[str, object]]:
        """The access-log events, when the proxy runs with ``--log-format json``."""
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("log_namespace") == "dockerproxy.access":
                    events.append(event)
        return events

    def stop(self) -> None:
        self.proc.stop()


# The type of the integration tests' ``start_proxy`` fixture, which calls start_proxy() with a
# work directory of the test's own and stops every proxy it started at teardown.
StartProxy = Callable[..., ProxyProcess]


def start_proxy(
    workdir: Path,
    *args: str,
    name: str = "dockerproxy",
    port: int | None = None,
    listen: str | None = None,
    scheme: str = "http",
    env: Mapping[str, str] | None = None,
    wait: bool = True,
) -> ProxyProcess:
    """Start dockerproxy on a free loopback port (or C{listen}, an endpoint string)."""
    port = port or free_port()
    listen = listen or f"tcp:{port}:interface={HOST}"
    workdir.mkdir(parents=True, exist_ok=True)
    if "--no-cache" not in args and not any(a.startswith("--cache-dir") for a in args):
        args = (*args, "--cache-dir", str(workdir / f"{name}-cache"))
    full_env = {**os.environ, **(env or {})}
    proc = ManagedProcess(
        name, twistd_argv("--listen", listen, *args), workdir, env=full_env, cwd=workdir
    )
    proxy = ProxyProcess(proc, port, scheme)
    if not wait:
        proc.start()
    elif scheme == "http":
        proc.start_serving(f"{proxy.url}/", timeout=20)
    else:
        proc.start_listening(port, timeout=20)
    return proxy


def run_twistd(
    workdir: Path,
    args: Sequence[str],
    timeout: float = 20,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """Run twistd to completion (for options that must fail): exit status and stderr.

    ``prefix`` goes before the command (e.g. ``setpriv`` to run it as another user).
    """
    import subprocess

    result = subprocess.run(
        [*prefix, *twistd_argv(*args)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return result.returncode, result.stderr
