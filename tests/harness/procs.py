"""Managed child processes for test servers.

Each process runs in its own process group (new session) with stdout and stderr appended to one
log file, so ``stop()`` can kill the whole tree (a server and anything it spawned) and failures
can quote the log. On Linux the direct child also gets PR_SET_PDEATHSIG, so it dies with the
test runner even when pytest itself is killed and no finalizer runs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.harness.ports import wait_for_port, wait_http

REPO_ROOT = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1
_LIVE: set[ManagedProcess] = set()


def _die_with_parent() -> None:
    """Runs in the child before exec: become a session leader and die with the parent."""
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is neither a zombie nor dead (``/proc``, Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


class ManagedProcess:
    """A command started in its own process group, logging to ``log_dir/NAME.log``.

    Use as a context manager, or call ``start()`` and always ``stop()`` (e.g. in a finalizer).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_dir) / f"{name}.log"
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ManagedProcess:
        """Start the command; its output goes to ``log_path`` (appended, so restarts keep it)."""
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_die_with_parent,  # setsid + pdeathsig only, no locks
                close_fds=True,
            )
        _LIVE.add(self)
        return self

    def start_listening(self, port: int, timeout: float = 15.0) -> ManagedProcess:
        """Start the command and wait until something accepts connections on ``port``."""
        return self._start_until(lambda: wait_for_port(port, timeout, alive=self.exit_problem))

    def start_serving(self, url: str, timeout: float = 15.0) -> ManagedProcess:
        """Start the command and wait until ``url`` answers HTTP (any status)."""
        return self._start_until(lambda: wait_http(url, timeout, alive=self.exit_problem))

    def _start_until(self, ready: Callable[[], object]) -> ManagedProcess:
        """Start, then wait for ``ready``; a process that dies or is not ready in time is
        stopped before the error (which quotes its log) goes up."""
        self.start()
        try:
            ready()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        """The child's PID, which is also its process-group ID."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self.proc.pid

    def alive(self) -> bool:
        """True while the direct child has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def exit_problem(self) -> str | None:
        """An error message with the log tail if the process has exited, else None.

        Passed to ``ports.wait_*`` as ``alive=`` so a crash at startup fails at once.
        """
        if self.proc is None:
            return f"{self.name} was never started"
        rc = self.proc.poll()
        if rc is None:
            return None
        return f"{self.name} exited with {rc}:\n{self.log_tail()}"

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, then SIGKILL it after ``timeout``; idempotent.

        The group is signalled even if the leader already exited, so grandchildren go too.
        """
        proc = self.proc
        if proc is None:
            return None
        if self._stopped:
            # Never signal the group twice: its ID may belong to someone else by now.
            return proc.returncode
        self._stopped = True
        _LIVE.discard(self)
        self._signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # Always finish with SIGKILL: it also reaps group members that ignored SIGTERM.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        return proc.returncode

    def restart(self, timeout: float = 5.0) -> ManagedProcess:
        """Stop (if running) and start the same command again; the log keeps growing."""
        self.stop(timeout)
        self.proc = None
        self._stopped = False
        return self.start()

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> ManagedProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- logs ------------------------------------------------------------------------------

    def log_size(self) -> int:
        """Current length of the log in bytes: a mark for ``log_text(since=...)``."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        """The log from byte offset ``since`` to its current end."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log_quiet(self, settle: float = 0.2, max_wait: float = 5.0) -> None:
        """Wait until the log has not grown for ``settle`` seconds (at most ``max_wait``).

        Servers log a request after answering it, so a client can be done before the line is
        written; checking logs right after a request must wait for them to settle.
        """
        if settle <= 0:
            return
        deadline = time.monotonic() + max_wait
        size = self.log_size()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(min(0.05, settle))
            now = self.log_size()
            if now != size:
                size, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return

    def json_lines(self, since: int = 0) -> list[dict[str, Any]]:
        """The JSON lines of the log from ``since``: the records a harness server writes.

        Other lines (a traceback, a line still being written) are passed over.
        """
        records = []
        for line in self.log_text(since).splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        return records

    def log_tail(self, lines: int = 40, skip: str | None = None) -> str:
        """The last ``lines`` lines of the log (without lines containing ``skip``)."""
        text = self.log_text()
        kept = [line for line in text.splitlines() if skip is None or skip not in line]
        tail = kept[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<ManagedProcess {self.name} pid={getattr(self.proc, 'pid', None)} {state}>"


def start_harness_server(
    name: str, module: str, args: Sequence[str], workdir: Path, port: int
) -> ManagedProcess:
    """``python -m module args``, a server of this checkout's harness, as a process of its own
    logging to ``workdir``; returned once it accepts connections on ``port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", module, *args]
    return ManagedProcess(name, argv, workdir, env=env, cwd=REPO_ROOT).start_listening(port)


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: stop anything a crashed fixture forgot (finalizers normally do this)."""
    for proc in list(_LIVE):
        proc.stop(timeout=1.0)
