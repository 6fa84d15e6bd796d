"""Debian's ``redis-server`` for the fleet tests, on a free port of 127.0.0.1.

It keeps nothing on disk (``--save ''``, no append-only file) and runs from its own
directory; ``stop()`` always ends it (a fixture calls it in ``finally``), and it can be
started again on the same port to bring a fleet's Redis back.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.harness.ports import HOST, free_port, wait_for_port
from tests.harness.procs import ManagedProcess


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError("no redis-server: apt-get install redis-server")
    return found


@dataclass
class RedisServer:
    """A redis-server on ``port``; ``url`` is what ``--redis`` takes."""

    workdir: Path
    port: int
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.process = ManagedProcess("redis", argv, self.workdir, cwd=self.workdir).start()
        try:
            wait_for_port(self.port, alive=self.process.exit_problem)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=2.0)
            self.process = None

    def command(self, *args: str) -> bytes:
        """One command in RESP over a plain socket (no client library needed here); the
        whole first reply line, e.g. ``b"+PONG"`` or ``b":3"``."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        with socket.create_connection((HOST, self.port), timeout=5) as conn:
            conn.sendall(request.encode())
            return conn.makefile("rb").readline().rstrip(b"\r\n")


def start_redis(workdir: Path) -> RedisServer:
    workdir.mkdir(parents=True, exist_ok=True)
    return RedisServer(workdir, free_port()).start()
