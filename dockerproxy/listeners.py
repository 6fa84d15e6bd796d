"""The listening ports, kept by one service, and the open client connections.

twistd's C{strports.service} makes one service per endpoint and keeps the port
to itself; the proxy needs its ports to stop accepting on all of them at once
when C{--max-connections} client connections are open. New connections then
wait in the kernel's listen backlog instead of costing a file descriptor and
memory each, and are accepted as soon as an open one closes. The open
connections are also what a graceful stop drains (L{dockerproxy.drain}).

C{ssl:} endpoints are listened on with L{dockerproxy.certificates}, so that a
reload (L{Listeners.apply}) serves renewed certificates to new connections.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    SSL4ServerEndpoint,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IPushProducer,
    IReactorCore,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from dockerproxy.certificates import ServerCertificates, is_tls, parse_tls

log = Logger()

WARN_EVERY = 60.0  # seconds between two "bound reached" warnings


class ListenFailed(Exception):
    """An endpoint the proxy cannot listen on (port in use, no permission, bad TLS files)."""

    def __init__(self, description: str, reason: BaseException, option: str = "--listen") -> None:
        super().__init__(f"{option}: cannot listen on {description!r}: {describe(reason)}")
        self.description = description


def describe(error: BaseException) -> str:
    """One line for why an endpoint failed: the OS's words, or OpenSSL's, not a repr."""
    if isinstance(error, CannotListenError) and isinstance(error.socketError, BaseException):
        return describe(error.socketError)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    reasons = error.args[0] if error.args else None
    if isinstance(reasons, list) and reasons and all(isinstance(r, tuple) for r in reasons):
        # OpenSSL's error queue: (library, function, reason) triples.
        return "TLS: " + "; ".join(": ".join(p for p in r if p) for r in reasons)
    return str(error) or type(error).__name__


class Listeners(service.Service):
    """Listens on endpoint descriptions (C{tcp:}, C{ssl:}, C{systemd:}, ...) with one
    factory, keeps the ports, can pause accepting on all of them, and reads the
    certificates of its C{ssl:} ports again on a reload."""

    name = "listeners"

    def __init__(
        self,
        reactor: IReactorCore,
        descriptions: Sequence[str],
        factory: IProtocolFactory,
        option: str = "--listen",
        adopted: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.reactor = reactor
        # description -> (file descriptor, address family): sockets opened by a
        # supervisor (dockerproxy.workers), adopted instead of listened on.
        self.adopted = dict(adopted or {})
        self.option = option  # what a failure to listen names
        self.descriptions = tuple(descriptions)
        self.factory = factory
        self.ports: list[IListeningPort] = []
        self.certificates: list[ServerCertificates] = []  # of the ssl: endpoints
        self.paused = False
        self._started = False

    def privilegedStartService(self) -> None:
        """Listen now, before twistd gives up privileges (ports under 1024); an endpoint
        that fails at once stops the start with L{ListenFailed}."""
        super().privilegedStartService()
        self._started = True
        self.certificates = []
        for description in self.descriptions:
            failure = self._listen(description)
            if failure is not None:
                reason = failure.value or RuntimeError("unknown")
                raise ListenFailed(description, reason, self.option)

    def _listen(self, description: str) -> Failure | None:
        """Start listening; the failure if it failed at once, else later ones are logged."""
        now: list[Failure] = []
        waiting = [False]

        def failed(failure: Failure) -> None:
            if waiting[0]:
                log.failure("cannot listen on {endpoint}", failure, endpoint=description)
            else:
                now.append(failure)

        try:
            endpoint = self._endpoint(description)
        except Exception:
            return Failure()  # e.g. a TLS key or certificate file that cannot be read
        d = endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failed)
        waiting[0] = True
        return now[0] if now else None

    def _endpoint(self, description: str) -> IStreamServerEndpoint:
        """Twisted's endpoint for C{description}; for C{ssl:}, one whose certificate
        can be replaced (it reads the files now)."""
        adopted: IStreamServerEndpoint | None = None
        if description in self.adopted:
            fd, family = self.adopted[description]
            adopted = AdoptedStreamServerEndpoint(self.reactor, fd, family)
        if not is_tls(description):
            return adopted or serverFromString(self.reactor, description)
        listen = parse_tls(description)
        certificates = ServerCertificates(listen)
        self.certificates.append(certificates)
        if adopted is not None:
            return TLSOverEndpoint(adopted, certificates)
        if listen.systemd_index is not None:
            inner = f"systemd:domain={listen.domain}:index={listen.systemd_index}"
            return TLSOverEndpoint(serverFromString(self.reactor, inner), certificates)
        return SSL4ServerEndpoint(
            self.reactor,
            listen.port,
            certificates,
            listen.backlog,
            listen.interface,
        )

    def apply(self, config: object = None) -> None:
        """A reload: read each C{ssl:} endpoint's files again. New connections get a
        certificate that loads; one that does not is refused in one line and the one
        in use stays. (The endpoints themselves change only with a restart.)"""
        for certificates in self.certificates:
            endpoint = certificates.listen.description
            try:
                old, new = certificates.reload()
            except Exception as e:
                log.error(
                    "reload: the certificate of {endpoint} is refused, the old one stays: {why}",
                    endpoint=endpoint,
                    why=describe(e),
                )
                continue
            if old != new:
                log.info(
                    "reload: {endpoint} serves a new certificate to new connections "
                    "(sha256 {fingerprint})",
                    endpoint=endpoint,
                    fingerprint=new,
                )

    def startService(self) -> None:
        super().startService()
        if not self._started:
            self.privilegedStartService()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        ports, self.ports = self.ports, []
        self._started = False
        return DeferredList(
            [maybeDeferred(port.stopListening) for port in ports], consumeErrors=True
        )

    def pause(self) -> None:
        """Stop accepting connections on every port (they wait in the backlog)."""
        self.paused = True
        for port in self.ports:
            _producer(port).pauseProducing()

    def resume(self) -> None:
        self.paused = False
        for port in self.ports:
            _producer(port).resumeProducing()

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.ports.append(port)
        if self.paused:
            _producer(port).pauseProducing()
        return port


@implementer(IStreamServerEndpoint)
class TLSOverEndpoint:
    """TLS on the connections of another endpoint (C{ssl:systemd=N}: systemd's socket),
    as Twisted's own C{ssl:} endpoint wraps the ports it opens."""

    def __init__(self, inner: IStreamServerEndpoint, certificates: ServerCertificates) -> None:
        self.inner = inner
        self.certificates = certificates

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.inner.listen(TLSMemoryBIOFactory(self.certificates, False, factory))


def _producer(port: IListeningPort) -> IPushProducer:
    """A stream port is a file descriptor: pausing it stops calling accept()."""
    producer = IPushProducer(port, None)
    if producer is None:
        raise TypeError(f"{port!r} cannot pause accepting connections")
    return producer


class ConnectionLimit:
    """Keeps the open client connections; at C{maximum}, accepting stops until one closes.

    Twisted accepts a batch of connections per readiness event, so a batch can
    arrive past the bound before the pause takes effect: those connections are
    not admitted, and their channels close them at once.
    """

    def __init__(
        self,
        maximum: int,
        pause: Callable[[], None],
        resume: Callable[[], None],
        clock: IReactorTime,
        make_room: Callable[[int], None] | None = None,
    ) -> None:
        self.maximum = maximum
        self.pause = pause
        self.resume = resume
        self.clock = clock
        # For a raised bound: file descriptors (raise_fd_limit, which tests replace).
        self.make_room = make_room or raise_fd_limit
        self.channels: set[Any] = set()  # the admitted channels (ProxyChannel)
        self._closed_waiters: list[Deferred[None]] = []
        self._warned = -WARN_EVERY

    @property
    def open(self) -> int:
        return len(self.channels)

    def set_maximum(self, maximum: int) -> None:
        """A new bound (a reload): accepting pauses or resumes as it now says; connections
        open over a lowered bound stay, and new ones wait until they are under it."""
        if maximum == self.maximum:
            return
        was_full = self.open >= self.maximum
        self.maximum = maximum
        self.make_room(maximum)
        full = self.open >= maximum
        if full and not was_full:
            self.pause()
        elif was_full and not full:
            self.resume()

    def admit(self, channel: Any) -> bool:
        if self.open >= self.maximum:
            return False
        self.channels.add(channel)
        if self.open == self.maximum:
            self.pause()
            now = self.clock.seconds()
            if now - self._warned >= WARN_EVERY:
                self._warned = now
                log.warn(
                    "{open} client connections open (--max-connections): new ones wait "
                    "until one closes",
                    open=self.open,
                )
        return True

    def replace(self, old: Any, new: Any) -> None:
        """C{new} holds C{old}'s connection (and slot) from now on (HTTP/2 taking over)."""
        if old in self.channels:
            self.channels.discard(old)
            self.channels.add(new)

    def release(self, channel: Any) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        if self.open == self.maximum - 1:
            self.resume()
        if not self.channels:
            waiters, self._closed_waiters = self._closed_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def all_closed(self) -> Deferred[None]:
        """Fires once no client connection is open (at once if none is); cancellable."""
        if not self.channels:
            return succeed(None)
        waiter: Deferred[None] = Deferred(lambda d: self._closed_waiters.remove(d))
        self._closed_waiters.append(waiter)
        return waiter


def raise_fd_limit(max_connections: int) -> None:
    """Make room for C{max_connections} client sockets plus as many upstream ones.

    The soft RLIMIT_NOFILE is often 1024: past it accept() fails and clients are
    dropped long before the bound. Raise it toward the hard limit, or warn.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * max_connections + 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    if soft < max_connections + 1024:
        log.warn(
            "only {soft} file descriptors for --max-connections {max}: raise the hard "
            "limit (systemd: LimitNOFILE=) or lower --max-connections",
            soft=soft,
            max=max_connections,
        )
