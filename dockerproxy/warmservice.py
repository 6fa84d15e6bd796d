"""The daemon's C{[[warm]]} refresh: configured images pulled through the proxy on a schedule.

Every C{interval}, each entry's images are pulled (L{dockerproxy.warming}) through
the proxy's own first listener over loopback, exactly as a client's pull: the tag is
revalidated (a HEAD upstream once its TTL is over, so the cached tag is fresh) and a
new manifest and its blobs are fetched into the cache, so the next client's pull
after an upstream release is a hit. Going through the listener rather than calling
the mirror directly keeps one code path for every pull (routing, access records,
coalesced fills, the limits) and the same code as C{dockerproxy warm}.

When clients must log in, the refresh presents a token the proxy signs for its own
identity (L{dockerproxy.clientauth.WARM_USER}): it needs no user. A TLS listener is
reached without checking its certificate: the address is the proxy's own socket.

Bounded: one run at a time (an entry due while a run goes on waits for it), one
image at a time, its blobs C{concurrency} at once. A failed image is one log line,
and the next run tries again. Stopping the service (SIGTERM) cancels the run under way.
A reload takes the new C{[[warm]]} entries: new ones are due at once, unchanged
ones keep their schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from OpenSSL import SSL
from twisted.application import service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from dockerproxy.auth import Challenge
from dockerproxy.config import Config
from dockerproxy.config.warm import WarmEntry
from dockerproxy.warming import HTTP, Authorize, ProxyClient, TokenLogin, Warmer

log = Logger()

WARM_CONCURRENCY = 4


class WarmRefresh(service.Service):
    """Runs the C{[[warm]]} entries on their schedules (see the module).

    C{locate} gives the URL of the proxy's own listener (None until it listens);
    C{authorize} the Authorization for a challenge when clients must log in.
    """

    name = "warm"

    def __init__(
        self,
        reactor: Any,
        entries: Sequence[WarmEntry],
        locate: Callable[[], str | None],
        http: HTTP,
        authorize: Authorize | None = None,
        concurrency: int = WARM_CONCURRENCY,
        close: Callable[[], Any] | None = None,
    ) -> None:
        self.reactor = reactor
        self.locate = locate
        self.http = http
        self.authorize = authorize
        self.concurrency = concurrency
        self.close = close  # at the stop: the HTTP client's connections
        self.due: dict[WarmEntry, float] = dict.fromkeys(entries, 0.0)
        self.run: Deferred[None] | None = None
        self.runs = 0  # finished runs, for tests and logs
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        now = self.reactor.seconds()
        self.due = dict.fromkeys(self.due, now)
        self._schedule()

    def stopService(self) -> Any:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.run is not None:
            self.run.cancel()
        return self.close() if self.close is not None else None

    def apply(self, config: Config) -> None:
        """A reload: the new entries; unchanged ones keep their next time, new ones are due."""
        now = self.reactor.seconds()
        self.due = {entry: self.due.get(entry, now) for entry in config.warm}
        if self.running:
            self._schedule()

    def _schedule(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.run is not None or not self.due:
            return
        delay = max(0.0, min(self.due.values()) - self.reactor.seconds())
        self._call = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        now = self.reactor.seconds()
        due = [entry for entry, when in self.due.items() if when <= now]
        if not due:
            self._schedule()
            return
        run = Deferred.fromCoroutine(self._refresh(due))
        self.run = run
        run.addErrback(lambda f: f.trap(CancelledError))
        run.addErrback(lambda f: log.failure("warm: the refresh failed", f))
        run.addBoth(lambda _: self._finished(due))

    def _finished(self, entries: Sequence[WarmEntry]) -> None:
        self.run = None
        self.runs += 1
        now = self.reactor.seconds()
        for entry in entries:
            if entry in self.due:
                self.due[entry] = now + entry.interval
        if self.running:
            self._schedule()

    async def _refresh(self, entries: Sequence[WarmEntry]) -> None:
        base = self.locate()
        if base is None:
            log.warn("warm: no tcp: or ssl: listener to pull through; nothing warmed")
            return
        client = ProxyClient(self.http, base, self.authorize)
        failed = total = 0
        for entry in entries:
            warmer = Warmer(client, entry.platforms, self.concurrency, clock=self.reactor)
            for image in entry.images:
                outcome = await warmer.warm(image)
                if not self.running:
                    return  # stopped: the cancelled requests are no failure of the image
                total += 1
                if not outcome.ok:
                    failed += 1
                    log.warn("warm: {image} failed: {error}", image=str(image), error=outcome.error)
        log.info("warm: refreshed {total} images, {failed} failed", total=total, failed=failed)


@implementer(IPolicyForHTTPS)
class TrustOwnListener:
    """TLS to the proxy's own listener, over loopback: its certificate names the public
    host, not 127.0.0.1, and the socket is the proxy's own, so it is not checked."""

    def __init__(self) -> None:
        self.creator = _Unverified()

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return self.creator


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS connections that do not check the peer's certificate (see L{TrustOwnListener})."""

    def __init__(self) -> None:
        self.context = CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        return connection


class LoopbackHTTP:
    """treq's interface over an agent of the refresh's own (its pool closes with the stop)."""

    def __init__(self, reactor: Any) -> None:
        import treq
        from treq.client import HTTPClient

        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.client = HTTPClient(Agent(reactor, contextFactory=TrustOwnListener(), pool=self.pool))
        self._treq = treq

    def close(self) -> Deferred[None]:
        return self.pool.closeCachedConnections()

    def request(self, method: str, url: str, *, headers: Headers, timeout: float) -> Any:
        return self.client.request(
            method, url, headers=headers, timeout=timeout, reactor=self.reactor
        )

    def collect(self, response: IResponse, collector: Callable[[bytes], None]) -> Any:
        return self._treq.collect(response, collector)


def listener_url(ports: Sequence[Any]) -> str | None:
    """The URL of the first TCP port (C{tcp:}, C{ssl:}, systemd's) from this machine: its
    own address, or loopback for one listening on every interface."""
    for port in ports:
        address = port.getHost()
        if not isinstance(address, IPv4Address | IPv6Address):
            continue
        host = address.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if isinstance(address, IPv4Address) else "::1"
        if ":" in host:
            host = f"[{host}]"
        scheme = (
            "https" if isinstance(getattr(port, "factory", None), TLSMemoryBIOFactory) else "http"
        )
        return f"{scheme}://{host}:{address.port}"
    return None


def token_authorize(sign: Callable[[str], str | None]) -> Authorize:
    """Answers a challenge with a token C{sign} makes for the scope's repository."""

    async def authorize(challenge: Challenge) -> bytes | None:
        kind, _, rest = challenge.params.get("scope", "").partition(":")
        repository = rest.rpartition(":")[0]
        if kind != "repository" or not repository:
            return None
        token = sign(repository)
        return None if token is None else b"Bearer " + token.encode("latin-1")

    return authorize


def make_warm(config: Config, reactor: Any, listeners: Any, client_auth: Any) -> WarmRefresh:
    """The refresh of C{config.warm}, pulling through C{listeners}' first port (as the
    proxy itself when clients log in, else with the anonymous token of the challenge's
    realm, as any client); it idles with no entries, until a reload adds some."""
    http = LoopbackHTTP(reactor)
    authorize: Authorize = (
        token_authorize(client_auth.warm_token) if client_auth.enabled else TokenLogin(http)
    )
    return WarmRefresh(
        reactor,
        config.warm,
        lambda: listener_url(listeners.ports),
        http,
        authorize,
        close=http.close,
    )
