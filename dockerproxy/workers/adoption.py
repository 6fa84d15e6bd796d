"""A worker's side: the sockets its supervisor handed it, and the supervisor's lifeline.

The supervisor starts a worker with C{DOCKERPROXY_WORKER} in its environment: a
JSON object naming the worker's index, the file descriptor and address family of
each listener (by its endpoint description, as the configuration says it), those
of the admin listeners (handed to worker 0 only), and the lifeline: the read end
of a pipe whose write end only the supervisor holds, and the write end of
another, on which the worker says it is ready once its whole service tree has
started: SIGHUP would kill a worker that has no handler for it yet, so the
supervisor passes a reload on only to ready workers (and to the others once they
are). When the supervisor is gone,
however it went (even C{kill -9}), the pipe ends and the worker stops as on
SIGTERM, draining: no worker outlives its supervisor.

C{ssl:} listeners are handed over as the TCP socket; each worker wraps its
connections in TLS itself (L{dockerproxy.listeners.TLSOverEndpoint}) and reads
the certificate files itself, on start and on a reload.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet.error import ConnectionDone, ReactorNotRunning
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

ENVIRONMENT = "DOCKERPROXY_WORKER"

# An adopted socket: its file descriptor and address family (socket.AF_INET, ...).
Socket = tuple[int, int]


@dataclass(frozen=True)
class WorkerSockets:
    """What a worker was handed: see the module."""

    index: int
    lifeline: int
    ready: int  # where the worker says it serves (and reloads on SIGHUP): see Ready
    listen: Mapping[str, Socket] = field(default_factory=dict)
    admin: Mapping[str, Socket] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "lifeline": self.lifeline,
                "ready": self.ready,
                "listen": self.listen,
                "admin": self.admin,
            }
        )

    @classmethod
    def decode(cls, text: str) -> WorkerSockets:
        data = json.loads(text)
        return cls(
            index=int(data["index"]),
            lifeline=int(data["lifeline"]),
            ready=int(data["ready"]),
            listen={k: (int(fd), int(af)) for k, (fd, af) in data["listen"].items()},
            admin={k: (int(fd), int(af)) for k, (fd, af) in data["admin"].items()},
        )


def from_environment(environ: Mapping[str, str] = os.environ) -> WorkerSockets | None:
    """This process's sockets if a supervisor started it as a worker, else None."""
    text = environ.get(ENVIRONMENT)
    return WorkerSockets.decode(text) if text else None


@implementer(IReadDescriptor)
class _PipeEnd:
    """The read end of the lifeline: nothing is ever written, so any read is its end."""

    def __init__(self, fd: int, ended: Callable[[], None]) -> None:
        self.fd = fd
        self.ended = ended
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> Any:
        if os.read(self.fd, 64):
            return None
        return ConnectionDone()

    def connectionLost(self, reason: Failure) -> None:
        self.closed = True
        os.close(self.fd)
        self.ended()

    def logPrefix(self) -> str:
        return "lifeline"


class Lifeline(service.Service):
    """Stops the worker (C{stop}, the reactor's stop: a drain) once its supervisor is gone."""

    name = "lifeline"

    def __init__(self, reactor: IReactorFDSet, fd: int, stop: Callable[[], None]) -> None:
        self.reactor = reactor
        self.end = _PipeEnd(fd, self._ended)
        self.stop = stop

    def startService(self) -> None:
        super().startService()
        self.reactor.addReader(self.end)

    def stopService(self) -> None:
        super().stopService()
        if not self.end.closed:
            self.reactor.removeReader(self.end)

    def _ended(self) -> None:
        if not self.running:
            return
        log.warn("the supervisor is gone: this worker stops")
        try:
            self.stop()
        except ReactorNotRunning:
            pass  # already stopping


class Ready(service.Service):
    """The last service of a worker's tree: once it starts, everything before it has
    (the SIGHUP handler, the listeners), and the supervisor is told so."""

    name = "ready"

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def startService(self) -> None:
        super().startService()
        try:
            os.write(self.fd, b"ready\n")
        except OSError as e:  # the supervisor is gone: the lifeline stops this worker
            log.warn("cannot tell the supervisor this worker is ready: {error}", error=e)
        finally:
            os.close(self.fd)
