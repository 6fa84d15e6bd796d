"""The supervisor: runs N workers on the listeners it opened, restarts the ones that die,
and passes SIGTERM (a drain) and SIGHUP (a reload) on to all of them.

A worker that dies is started again (same index, same sockets) after a delay
that doubles with each death in a row, up to L{MAX_DELAY}: a crash loop (a bad
certificate file, a full disk) costs a start every half minute, not a spinning
CPU. A worker that lived L{STABLE} seconds starts the count again.

On SIGTERM (twistd stops the reactor, which stops this service) every worker is
sent SIGTERM and drains as a single proxy does (C{--drain-timeout}); once all
have exited the supervisor exits 0. One still running L{KILL_GRACE} seconds past
the drain timeout is killed. On SIGHUP the configuration is read and checked
here first: a bad one is refused in one line, as a single proxy refuses it, and
no worker is troubled; a good one is passed on as SIGHUP to every worker, which
reloads itself (L{dockerproxy.reload}).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

from prometheus_client.multiprocess import mark_process_dead
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from dockerproxy import internals
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.config import Config
from dockerproxy.listeners import ListenFailed
from dockerproxy.logs import LogFormat
from dockerproxy.reload import checked
from dockerproxy.workers.adoption import ENVIRONMENT, Socket, WorkerSockets
from dockerproxy.workers.opening import OpenedListener, open_listeners

log = Logger()

FIRST_DELAY = 0.5  # seconds before the first restart of a worker that died
MAX_DELAY = 30.0
STABLE = 10.0  # a worker that lived this long died "for the first time"
KILL_GRACE = 10.0  # seconds past the drain timeout before a stopping worker is killed
LIFELINE_FD = 3  # in the worker: the pipe whose end says the supervisor is gone
READY_FD = 4  # in the worker: where it says it is ready
FIRST_SOCKET_FD = 5
# What a worker must not take from the supervisor's environment: systemd's sockets are
# handed over by the supervisor, at other numbers.
SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

InstallHandler = Callable[[int, Any], Any]
# prometheus_client's multiprocess mode (dockerproxy.admin.metrics): the workers' counts.
METRICS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def _hand(
    listeners: Sequence[OpenedListener], index: int, fds: dict[int, Any]
) -> dict[str, Socket]:
    """Give worker C{index}'s socket of each listener the worker's next free descriptor
    (in C{fds}, the childFDs)."""
    handed = {}
    for listener in listeners:
        number = max(FIRST_SOCKET_FD - 1, *fds) + 1
        fds[number] = listener.fd_for(index)
        handed[listener.description] = (number, listener.family)
    return handed


class Backoff:
    """The delay before a worker's next start, by how long its last run lasted."""

    def __init__(self) -> None:
        self.delay = 0.0

    def after(self, lived: float) -> float:
        if lived >= STABLE:
            self.delay = 0.0
        self.delay = min(MAX_DELAY, self.delay * 2 if self.delay else FIRST_DELAY)
        return self.delay


class Worker(ProcessProtocol):
    """One worker process, as the supervisor sees it."""

    def __init__(self, index: int, started: float, ended: Callable[[Worker, Failure], None]):
        self.index = index
        self.started = started
        self.ended_callback = ended
        self.exited: Deferred[None] = Deferred()
        self.transport: IProcessTransport | None = None
        self.pid: int | None = None
        self.ready = False
        self.reload_pending = False  # a SIGHUP came before it was ready

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == READY_FD and not self.ready:
            self.ready = True
            log.info("worker {index} (pid {pid}) is ready", index=self.index, pid=self.pid)
            if self.reload_pending:
                self.reload()

    def reload(self) -> None:
        """SIGHUP now if it has its handler (it is ready), else once it is."""
        self.reload_pending = not self.ready
        if self.ready:
            self.signal("HUP")

    def signal(self, name: str) -> None:
        if self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        self.ended_callback(self, reason)
        self.exited.callback(None)


class Supervisor(service.Service):
    """See the module. C{reactor} spawns the workers (C{spawnProcess}); C{argv} is the
    options they run with (the supervisor's own); C{load} reads the configuration again;
    C{install} is C{signal.signal} (a fake in tests), C{environ} and C{executable} the
    workers' environment and Python."""

    name = "supervisor"

    def __init__(
        self,
        config: Config,
        reactor: Any,
        argv: Sequence[str],
        load: Callable[[], Config],
        install: InstallHandler = signal.signal,
        environ: Mapping[str, str] = os.environ,
        executable: str = sys.executable,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.count = config.workers
        self.listeners: list[OpenedListener] = []
        self.admin: list[OpenedListener] = []
        self.argv = list(argv)
        self.load = load
        self.drain_timeout = config.drain_timeout
        self.install = install
        self.environ = environ
        self.executable = executable
        self.workers: dict[int, Worker] = {}
        self.backoffs = {index: Backoff() for index in range(self.count)}
        self.restarts: dict[int, IDelayedCall] = {}
        self.reloaders: list[Callable[[Config], None]] = []
        self.stopping = False
        self._previous: Any = None
        self._opened = False
        # Where the workers keep their counts for the admin listener's sum (with one).
        self.metrics_dir: str | None = None

    def setServiceParent(self, parent: Any) -> Any:
        """The log format, as L{dockerproxy.servicetree.DockerProxyService} chooses it."""
        if isinstance(parent, Componentized):
            observer = LogFormat(self.config.log_format)
            parent.setComponent(ILogObserver, observer)
            self.reloaders.append(observer.apply)
        return super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """Open the listeners (before twistd drops privileges); one that cannot be opened
        stops the start with one line on stderr and exit status 2, as without workers."""
        super().privilegedStartService()
        self._opened = True
        try:
            self.listeners = open_listeners(self.reactor, self.config.listen, workers=self.count)
            self.admin = open_listeners(self.reactor, self.config.admin.listen, "--admin-listen")
        except ListenFailed as e:
            for listener in self.listeners:
                listener.close()
            (sys.__stderr__ or sys.stderr).write(f"dockerproxy: {e}\n")
            raise SystemExit(2) from None

    def startService(self) -> None:
        if not self._opened:
            self.privilegedStartService()
        super().startService()
        self.clear_leftovers()
        if self.config.admin.listen:
            self.metrics_dir = tempfile.mkdtemp(prefix="dockerproxy-metrics-")
        self._previous = self.install(signal.SIGHUP, self._signalled)
        for index in range(self.count):
            self.start_worker(index)

    def clear_leftovers(self) -> None:
        """Empty the cache's C{tmp/} of what a crash left, while no worker runs: a worker
        that starts later (restarted) must leave the other workers' fills alone."""
        directory = self.config.cache.directory
        if directory is not None:
            store = FilesystemStore(directory)
            store.create()
            store.clear_tmp()

    def start_worker(self, index: int) -> Worker:
        self.restarts.pop(index, None)
        worker = Worker(index, self.reactor.seconds(), self._ended)
        fds: dict[int, Any] = {0: 0, 1: 1, 2: 2, LIFELINE_FD: "w", READY_FD: "r"}
        listen = _hand(self.listeners, index, fds)
        admin = _hand(self.admin, index, fds) if index == 0 else {}  # see README, Workers
        sockets = WorkerSockets(index, LIFELINE_FD, READY_FD, listen, admin)
        env = {k: v for k, v in self.environ.items() if k not in SYSTEMD_VARIABLES}
        env[ENVIRONMENT] = sockets.encode()
        if self.metrics_dir is not None:
            env[METRICS_VARIABLE] = self.metrics_dir
        args = [self.executable, "-m", "dockerproxy.workers", *self.argv]
        self.reactor.spawnProcess(worker, self.executable, args, env=env, childFDs=fds)
        self.workers[index] = worker
        log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)
        return worker

    def _ended(self, worker: Worker, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.metrics_dir is not None and worker.pid is not None:
            mark_process_dead(worker.pid, self.metrics_dir)  # its gauges; its counts stay
        status = getattr(reason.value, "exitCode", None)
        killed = getattr(reason.value, "signal", None)
        how = f"signal {killed}" if killed else f"status {status}"
        if self.stopping or not self.running:
            log.info("worker {index} exited ({how})", index=worker.index, how=how)
            return
        lived = self.reactor.seconds() - worker.started
        delay = self.backoffs[worker.index].after(lived)
        log.warn(
            "worker {index} (pid {pid}) died ({how}) after {lived:.1f} s: restarting it "
            "in {delay:g} s",
            index=worker.index,
            pid=worker.pid,
            how=how,
            lived=lived,
            delay=delay,
        )
        self.restarts[worker.index] = self.reactor.callLater(delay, self.start_worker, worker.index)

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> Config | None:
        """Check the configuration, then have every worker reload it; None if refused."""
        config = checked(self.load)
        if config is None:
            return None
        self.drain_timeout = config.drain_timeout
        for reloader in self.reloaders:
            reloader(config)
        for worker in self.workers.values():
            worker.reload()
        log.info("reload: passed on to {count} workers", count=len(self.workers))
        return config

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.stopping = True
        self.install(signal.SIGHUP, self._previous or signal.SIG_DFL)
        for call in self.restarts.values():
            call.cancel()
        self.restarts.clear()
        workers = list(self.workers.values())
        for worker in workers:
            worker.signal("TERM")
        deadline = self.reactor.callLater(self.drain_timeout + KILL_GRACE, self._kill, workers)
        d = DeferredList([w.exited for w in workers])

        def done(_: object) -> None:
            if deadline.active():
                deadline.cancel()
            for listener in [*self.listeners, *self.admin]:
                listener.close()
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
            # All drained: twistd exits 0, not again by the signal that stopped it.
            internals.forget_exit_signal(self.reactor, signal.SIGTERM)

        return d.addCallback(done)

    def _kill(self, workers: Sequence[Worker]) -> None:
        for worker in workers:
            if not worker.exited.called:
                log.warn("worker {index} is still running: killed", index=worker.index)
                worker.signal("KILL")
