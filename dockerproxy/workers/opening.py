"""The supervisor's side of the listeners: each opened once, to be handed to every worker.

A C{tcp:} (or C{tcp6:}) or C{ssl:} endpoint is a listening TCP socket the
supervisor binds itself, before twistd gives up privileges, with what Twisted's
own ports set (C{SO_REUSEADDR}, the backlog); a C{systemd:} or C{ssl:systemd=N}
endpoint is the socket systemd passed. TLS is each worker's (it holds the
certificates, which a reload reads again), so an C{ssl:} socket is plain TCP
here. Other endpoint types (C{unix:}, ...) are refused with one line: a worker
could not be handed them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString

from dockerproxy.certificates import is_tls, parse_tls, split_description
from dockerproxy.listeners import ListenFailed

DEFAULT_BACKLOG = 50  # Twisted's, for tcp: endpoints


@dataclass
class OpenedListener:
    """A listening socket and the endpoint description it was opened for."""

    description: str
    fd: int
    family: int
    owned: socket.socket | None = None  # opened here (else systemd's): closed on stop

    def close(self) -> None:
        if self.owned is not None:
            self.owned.close()


def open_listeners(
    reactor: object, descriptions: Sequence[str], option: str = "--listen"
) -> list[OpenedListener]:
    """Open every listener; L{ListenFailed} (and nothing left open) if one cannot be."""
    opened: list[OpenedListener] = []
    try:
        for description in descriptions:
            try:
                listener = _open(reactor, description)
            except Exception as e:
                raise ListenFailed(description, e, option) from None
            os.set_inheritable(listener.fd, True)
            opened.append(listener)
    except ListenFailed:
        for listener in opened:
            listener.close()
        raise
    return opened


def _open(reactor: object, description: str) -> OpenedListener:
    if is_tls(description):
        tls = parse_tls(description)
        if tls.systemd_index is not None:
            inner = f"systemd:domain={tls.domain}:index={tls.systemd_index}"
            return _inherited(reactor, description, inner)
        return _bind(description, tls.port, tls.interface, tls.backlog)
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
        return _bind(description, int(port), interface, int(backlog))
    raise ValueError("with workers, only tcp:, tcp6:, ssl: and systemd: listeners can be shared")


def _bind(description: str, port: int, interface: str, backlog: int) -> OpenedListener:
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface or "0.0.0.0", port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return OpenedListener(description, sock.fileno(), family, sock)


def _inherited(reactor: object, description: str, systemd: str) -> OpenedListener:
    """The socket systemd passed, as Twisted's C{systemd:} endpoint finds it."""
    endpoint = serverFromString(reactor, systemd)
    if not isinstance(endpoint, AdoptedStreamServerEndpoint):
        raise ValueError(f"{systemd!r} is not a socket systemd passed")
    return OpenedListener(description, endpoint.fileno, endpoint.addressFamily)
