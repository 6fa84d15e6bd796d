"""The supervisor's side of the listeners: each opened once, to be handed to every worker.

A C{tcp:} (or C{tcp6:}) or C{ssl:} endpoint is a listening TCP socket per worker
that the supervisor binds itself, before twistd gives up privileges, with what
Twisted's own ports set (C{SO_REUSEADDR}, the backlog) and C{SO_REUSEPORT}: the
kernel spreads new connections over the workers' sockets. On one shared socket
the worker that wakes first accepts a whole burst (Twisted accepts up to a hundred
a turn) and the others idle. A C{systemd:} or C{ssl:systemd=N} endpoint is the one
socket systemd passed, shared by all the workers. TLS is each worker's (it holds the
certificates, which a reload reads again), so an C{ssl:} socket is plain TCP
here. Other endpoint types (C{unix:}, ...) are refused with one line: a worker
could not be handed them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString

from dockerproxy.certificates import is_tls, parse_tls, split_description
from dockerproxy.listeners import ListenFailed

DEFAULT_BACKLOG = 50  # Twisted's, for tcp: endpoints


@dataclass
class OpenedListener:
    """The listening sockets of one endpoint description: one per worker, or one for all."""

    description: str
    fds: list[int]
    family: int
    owned: list[socket.socket] = field(default_factory=list)  # opened here: closed on stop

    def fd_for(self, index: int) -> int:
        """Worker C{index}'s socket."""
        return self.fds[index % len(self.fds)]

    def close(self) -> None:
        for sock in self.owned:
            sock.close()


def open_listeners(
    reactor: object, descriptions: Sequence[str], option: str = "--listen", workers: int = 1
) -> list[OpenedListener]:
    """Open every listener (for C{workers} workers); L{ListenFailed} (and nothing left
    open) if one cannot be."""
    opened: list[OpenedListener] = []
    try:
        for description in descriptions:
            try:
                listener = _open(reactor, description, workers)
            except Exception as e:
                raise ListenFailed(description, e, option) from None
            for fd in listener.fds:
                os.set_inheritable(fd, True)
            opened.append(listener)
    except ListenFailed:
        for listener in opened:
            listener.close()
        raise
    return opened


def _open(reactor: object, description: str, workers: int) -> OpenedListener:
    if is_tls(description):
        tls = parse_tls(description)
        if tls.systemd_index is not None:
            inner = f"systemd:domain={tls.domain}:index={tls.systemd_index}"
            return _inherited(reactor, description, inner)
        return _bind(description, tls.port, tls.interface, tls.backlog, workers)
    kind = description.split(":", 1)[0].lower()
    if kind == "systemd":
        return _inherited(reactor, description, description)
    if kind in ("tcp", "tcp6"):
        args, kwargs = split_description(description)
        port = kwargs.get("port", args[1] if len(args) > 1 else "")
        interface = kwargs.get("interface", "::" if kind == "tcp6" else "")
        backlog = kwargs.get("backlog", str(DEFAULT_BACKLOG))
        if not port.isdigit() or not backlog.isdigit():
            raise ValueError("the port and backlog must be numbers")
        return _bind(description, int(port), interface, int(backlog), workers)
    raise ValueError("with workers, only tcp:, tcp6:, ssl: and systemd: listeners can be shared")


def _bind(
    description: str, port: int, interface: str, backlog: int, workers: int
) -> OpenedListener:
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    listener = OpenedListener(description, [], family)
    try:
        for _ in range(workers):
            sock = socket.socket(family, socket.SOCK_STREAM)
            listener.owned.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if workers > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface or "0.0.0.0", port))
            port = sock.getsockname()[1]  # port 0: the others take the one the kernel chose
            sock.listen(backlog)
            sock.setblocking(False)
            listener.fds.append(sock.fileno())
    except BaseException:
        listener.close()
        raise
    return listener


def _inherited(reactor: object, description: str, systemd: str) -> OpenedListener:
    """The socket systemd passed, as Twisted's C{systemd:} endpoint finds it."""
    endpoint = serverFromString(reactor, systemd)
    if not isinstance(endpoint, AdoptedStreamServerEndpoint):
        raise ValueError(f"{systemd!r} is not a socket systemd passed")
    return OpenedListener(description, [endpoint.fileno], endpoint.addressFamily)
