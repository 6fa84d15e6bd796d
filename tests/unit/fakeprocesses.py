"""Fakes for the supervisor's tests: a reactor that records spawned processes, and
signal.signal that installs handlers in a dict."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure


class FakeProcess:
    """A spawned process: what it was started with, and the signals sent to it."""

    def __init__(
        self, pid: int, protocol: ProcessProtocol, args: list[str], env: dict[str, str], fds: Any
    ) -> None:
        self.pid = pid
        self.protocol = protocol
        self.args = args
        self.env = env
        self.fds = fds
        self.signals: list[str] = []
        self.ended = False

    def signalProcess(self, name: str) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def say(self, fd: int, data: bytes) -> None:
        """The process writes C{data} on its descriptor C{fd} (a pipe the parent reads)."""
        self.protocol.childDataReceived(fd, data)

    def exit(self, status: int = 0, signal_number: int | None = None) -> None:
        """The process ends: with C{status}, or killed by C{signal_number}."""
        self.ended = True
        reason: BaseException
        if signal_number is None and status == 0:
            reason = ProcessDone(0)
        else:
            reason = ProcessTerminated(status, signal_number)
        self.protocol.processEnded(Failure(reason))


class ProcessReactor(MemoryReactorClock):
    """A MemoryReactorClock that records C{spawnProcess} and queues C{callFromThread}."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.queued: list[Callable[[], object]] = []

    def spawnProcess(
        self,
        processProtocol: ProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Any = None,
    ) -> FakeProcess:
        process = FakeProcess(
            1000 + len(self.processes), processProtocol, args, env or {}, childFDs
        )
        self.processes.append(process)
        processProtocol.makeConnection(process)  # type: ignore[arg-type]
        return process

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        self.queued.append(lambda: f(*args, **kw))

    def run_queued(self) -> None:
        queued, self.queued = self.queued, []
        for call in queued:
            call()

    def live(self) -> list[FakeProcess]:
        return [p for p in self.processes if not p.ended]


class FakeSignals:
    """signal.signal: installs handlers in a dict, returns the one replaced."""

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {signal.SIGHUP: signal.SIG_DFL}

    def __call__(self, signum: int, handler: Any) -> Any:
        previous, self.handlers[signum] = self.handlers.get(signum), handler
        return previous

    def send(self, signum: int) -> None:
        self.handlers[signum](signum, None)
