"""The benchmarks' processes: each server in its own process group, always stopped.

L{Proc} and L{Procs} start servers with their output in a log file and stop them (the
whole group, SIGKILL for what is left); L{session} is one benchmark's processes and temp
dir, cleaned up however it ends; L{wait_http} waits for a server to answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"


def _child_setup() -> None:
    """In the child before exec: own session (process group); die if the bench dies."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Proc:
    """A server started in its own process group, output to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[object],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_child_setup,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (nginx workers, ...): always SIGKILL what is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


class Procs:
    """Every process the bench started; ``stop_all`` stops them in reverse order."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        while self.procs:
            proc = self.procs.pop()
            try:
                proc.stop()
            except Exception as e:
                print(f"warning: stopping {proc.name}: {e}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def response_head(
    port: int, path: str, method: str = "GET", timeout: float = 5.0
) -> tuple[int, dict[str, str]]:
    """C{method} C{path}; return the status and headers, leaving any body unread."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def wait_http(port: int, path: str, proc: Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            status, _ = response_head(port, path, timeout=2)
            if status == 200:
                return
            last = status
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not answering 200 on {path} ({last}):\n{proc.log_tail()}")


def raise_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM / SIGHUP handler: unwind like Ctrl-C, so every process is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def session(prefix: str, keep_tmp: bool) -> Iterator[tuple[Procs, Path]]:
    """The processes and temp dir of one benchmark: stopped and removed however it ends.

    SIGTERM and SIGHUP unwind like Ctrl-C, so no registry, nginx or proxy outlives it.
    """
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    RESULTS.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield procs, work
    finally:
        procs.stop_all()
        if keep_tmp:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
