"""The web Site: requests read once at the edge, logged once, over L{ProxyChannel}."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from dockerproxy.accesslog import access_log, log_access
from dockerproxy.channel import BodyBuffer, ProxyChannel
from dockerproxy.config import AccessSettings, ClientLimits, Config
from dockerproxy.edge import ClientRequest, read_client_request
from dockerproxy.errors import RegistryError
from dockerproxy.heap import HeapTrimmer
from dockerproxy.http2 import NegotiatedChannel
from dockerproxy.policy import Policy
from dockerproxy.rendering import JSONErrorPage
from dockerproxy.shaping import ShapedRequest

if TYPE_CHECKING:
    from dockerproxy.listeners import ConnectionLimit


class ProxyRequest(ShapedRequest):
    """Reads itself once at the edge, remembers when it started, and logs itself once,
    finished or cut short (then the memory its body used may go back to the system).
    Its body bytes are shaped to its client's bandwidth limit, if any."""

    # What the client sent, read once (see dockerproxy.edge); until then, or when it
    # cannot be read, the error to answer instead of any resource. (Not "client":
    # twisted.web keeps the peer's address there, for getClientAddress.)
    client_request: ClientRequest | None = None
    refused: RegistryError | None = None
    upstream: str | None = None
    # Who the proxy authenticated (its own users), if anyone. (twisted.web's Request.user,
    # bytes, is only filled in by getUser() from a Basic header: the proxy never calls it.)
    user: str | None = None  # type: ignore[assignment]
    # Why the proxy refused the request itself (e.g. "ip", "repository", "rate", "auth").
    refusal: str | None = None
    cache: str | None = None  # how the mirror answered: hit, miss, revalidated, stale, s3, ...
    upstream_status: int | None = None  # the status of the last upstream answer
    image: str | None = None  # the repository asked for, as NAME/REPOSITORY
    request_id = "-"  # echoed as X-Request-Id
    _clock: IReactorTime | None = None
    _heap: HeapTrimmer | None = None
    _access_log: Logger = access_log
    _started: float = 0.0
    _logged = False

    def process(self) -> None:
        site = self.channel.factory
        self._clock = site.reactor
        self._heap = site.heap
        self._access_log = site.access_log
        self._started = self._clock.seconds()
        try:
            self.client_request = read_client_request(
                self.requestHeaders,
                self.args,
                peer=getattr(self.getClientAddress(), "host", "-"),
                trusted=site.access.trusted_proxies,
            )
        except RegistryError as e:
            self.refused = e
        read = self.client_request
        self.request_id = read.request_id if read is not None else secrets.token_hex(8)
        self.setHeader(b"x-request-id", self.request_id.encode("ascii"))
        super().process()

    def finish(self) -> None:
        super().finish()
        if self.finished:  # not while a shaped body is still going out
            self._log_once(complete=True)

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        self._log_once(complete=False)

    def _log_once(self, complete: bool) -> None:
        # A request never processed (its client left, or the channel refused it and
        # logged that) has nothing to log here.
        if self._logged or self._clock is None:
            return
        self._logged = True
        read = self.client_request
        log_access(
            read.address if read is not None else getattr(self.getClientAddress(), "host", "-"),
            self.method,
            self.uri,
            self.code,
            self.sentLength,
            self._clock.seconds() - self._started,
            self.upstream,
            self.cache,
            complete,
            request_id=self.request_id,
            user=self.user,
            upstream_status=self.upstream_status,
            ns=read.ns if read is not None else None,
            image=self.image,
            refusal=self.refusal,
            protocol=self.clientproto.decode("ascii", "replace"),
            logger=self._access_log,
        )
        if self._heap is not None:
            self._heap.response_ended(aborted=not complete)


class ProxySite(Site):
    """A Site whose channels bound what clients send (L{ProxyChannel}), whose requests log
    themselves (twisted.web's own log line is off) and, with a L{HeapTrimmer}, have the
    heap trimmed after they end."""

    # HTTP/1.1 channels: Twisted's default wraps each in a protocol that may switch to
    # a bare HTTP/2 connection by ALPN, which the channel's limits do not cover. With
    # http2 set, buildProtocol wraps them in one that switches to a bounded one.
    protocol = ProxyChannel  # type: ignore[assignment]
    requestFactory = ProxyRequest
    http2 = False  # TLS listeners offer h2 by ALPN (set with the listeners)

    def __init__(
        self,
        resource: Resource,
        reactor: IReactorTime,
        limits: ClientLimits | None = None,
        heap: HeapTrimmer | None = None,
        access: AccessSettings | None = None,
    ) -> None:
        # timeout=None: Twisted's idle timer, restarted by every byte, is replaced
        # by the channel's deadlines.
        super().__init__(resource, reactor=reactor, timeout=None, parsePOSTFormSubmission=False)
        self.displayTracebacks = False
        self.limits = limits or ClientLimits()
        self.heap = heap
        # Who may pull what (replaced as a whole when the settings are reloaded).
        self.access = access or AccessSettings()
        # Set when the listening ports are known (servicetree.service_for); None: no bound.
        self.connections: ConnectionLimit | None = None
        # Who may connect, request rates and bandwidth (its quotas set by servicetree.service_for).
        self.policy = Policy(reactor)
        # Names the request's user, when clients log in, so that limits count per user.
        self.identify: Callable[[Request], None] | None = None
        # Where requests log themselves; with observers (the metrics), see accesslog.
        self.access_log: Logger = access_log

    def acceptableProtocols(self) -> list[bytes]:
        """What the C{ssl:} listeners offer by ALPN (Twisted's TLS asks the factory): h2
        only with C{--http2}; Twisted's Site offers it whenever the h2 package is there."""
        return [b"h2", b"http/1.1"] if self.http2 else [b"http/1.1"]

    def apply(self, config: Config) -> None:
        """A reload: new access settings and client limits, for every request from now
        on; the deadlines already running on open connections keep theirs."""
        self.access = config.access
        self.limits = config.limits
        self.policy.apply(config)
        if self.connections is not None:
            self.connections.set_maximum(config.limits.max_connections)
            for channel in self.connections.channels:
                channel.limits = config.limits

    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> ProxyChannel | NegotiatedChannel:
        channel = cast(ProxyChannel, super().buildProtocol(addr))
        channel.clock = self.reactor
        channel.limits = self.limits
        channel.connections = self.connections
        channel.access_log = self.access_log
        return NegotiatedChannel(channel) if self.http2 else channel

    def getContentFile(self, length: int | None) -> BodyBuffer:
        """Request bodies stay in memory, never over MAX_BODY (Request.gotLength asks
        the site; Twisted's own choice is a temporary file past 100 kB or chunked)."""
        return BodyBuffer()

    def getResourceFor(self, request: Request) -> Resource:
        """A request from a client the policy refuses, or that could not be read at the
        edge, reaches no resource."""
        unread = getattr(request, "refused", None)
        # Who the client is matters here only to its limits: without any, the token is
        # verified once, by the resource.
        if unread is None and self.identify is not None and not self.policy.unlimited:
            self.identify(request)
        refused = self.policy.admit(request, self.access) or unread
        if refused is not None:
            return JSONErrorPage(refused)
        return super().getResourceFor(request)

    def log(self, request: http.Request) -> None:
        """Replaced by L{ProxyRequest}'s own event, which also covers aborted requests."""
