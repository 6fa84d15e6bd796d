"""The web Site: one access-log event per request through C{twisted.logger}."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from dockerproxy.edge import ClientRequest, read_client_request
from dockerproxy.errors import RegistryError
from dockerproxy.heap import HeapTrimmer
from dockerproxy.resources import JSONErrorPage

access_log = Logger(namespace="dockerproxy.access")


class ProxyRequest(Request):
    """Reads itself once at the edge, remembers when it started, and logs itself once,
    finished or cut short (then the memory its body used may go back to the system)."""

    # What the client sent, read once (see dockerproxy.edge); until then, or when it
    # cannot be read, the error to answer instead of any resource.
    client: ClientRequest | None = None
    refused: RegistryError | None = None
    upstream: str | None = None
    cache: str | None = None  # how the mirror answered: hit, miss, revalidated, stale, s3, ...
    _clock: IReactorTime | None = None
    _heap: HeapTrimmer | None = None
    _started: float = 0.0
    _logged = False

    def process(self) -> None:
        site = self.channel.factory  # type: ignore[union-attr]
        self._clock = site.reactor
        self._heap = site.heap
        self._started = self._clock.seconds()
        try:
            self.client = read_client_request(self.requestHeaders, self.args)
        except RegistryError as e:
            self.refused = e
        super().process()

    def finish(self) -> None:
        super().finish()
        self._log_once(complete=True)

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)  # type: ignore[arg-type]
        self._log_once(complete=False)

    def _log_once(self, complete: bool) -> None:
        if self._logged:
            return
        self._logged = True
        duration = self._clock.seconds() - self._started if self._clock else 0.0
        access_log.info(
            "{client} {method} {path} {status} {bytes} {duration:.3f}s {upstream}"
            " cache={cache}{aborted}",
            client=getattr(self.getClientAddress(), "host", "-"),
            method=self.method.decode("ascii", "replace"),
            path=self.uri.decode("ascii", "replace"),
            status=self.code,
            bytes=self.sentLength,
            duration=duration,
            upstream=self.upstream or "-",
            cache=self.cache or "-",
            aborted="" if complete else " aborted",
            complete=complete,
        )
        if self._heap is not None:
            self._heap.response_ended(aborted=not complete)


TLS_HANDSHAKE = 0x16
NOT_TLS_RESPONSE = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                    b"Connection: close\r\n\r\nThis port speaks plain HTTP, not TLS.\n")


class ProxyChannel(HTTPChannel):
    """HTTP/1.1 that answers a TLS ClientHello at once instead of waiting for a line.

    Docker clients try HTTPS first even for an "insecure" registry and fall back
    to HTTP when the answer is not TLS; without this they wait out a 10 s handshake
    timeout on every pull.
    """

    _first = True

    def dataReceived(self, data: bytes) -> None:
        if self._first and data:
            self._first = False
            if data[0] == TLS_HANDSHAKE:
                self.transport.write(NOT_TLS_RESPONSE)
                self.transport.loseConnection()
                return
        super().dataReceived(data)


class ProxySite(Site):
    """A Site whose requests log themselves (twisted.web's own log line is off) and,
    with a L{HeapTrimmer}, have the heap trimmed after they end."""

    protocol = ProxyChannel
    requestFactory = ProxyRequest

    def __init__(self, resource: Resource, reactor: IReactorTime,
                 heap: HeapTrimmer | None = None) -> None:
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.displayTracebacks = False
        self.heap = heap

    def getResourceFor(self, request: Request) -> Resource:
        """A request that could not be read at the edge reaches no resource."""
        refused = getattr(request, "refused", None)
        if refused is not None:
            return JSONErrorPage(refused)
        return super().getResourceFor(request)

    def log(self, request: Request) -> None:
        """Replaced by L{ProxyRequest}'s own event, which also covers aborted requests."""
