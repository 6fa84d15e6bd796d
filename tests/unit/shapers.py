"""Shared by the bandwidth-shaping tests: clients whose requests are L{ShapedRequest}s
over a StringTransport, upstream bodies fed only while their socket is not paused, and
producers that record what they are told."""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import Site
from zope.interface import implementer

from dockerproxy.relay import BodyRelay, relay_body
from dockerproxy.shaping import ByteBudget, ShapedRequest
from tests.unit.fakes import Capture, ClientTransport, FakeResponse

IDLE = 60.0


class ShapedClient:
    """One client connection with one request, shaped by C{budget} (None: unlimited)."""

    def __init__(
        self,
        clock: Clock,
        budget: ByteBudget | None,
        method: bytes = b"GET",
        buffer_size: int | None = None,
    ) -> None:
        resource = Capture()
        site = Site(resource, reactor=clock)
        site.requestFactory = ShapedRequest
        self.protocol = site.buildProtocol(None)
        self.transport = ClientTransport(buffer_size)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(method + b" /v2/a/blobs/x HTTP/1.1\r\nHost: mirror\r\n\r\n")
        self.request: ShapedRequest = resource.requests[0]
        self.request.budget = budget
        self.channel = self.transport.producer

    def body(self) -> bytes:
        return self.transport.value().partition(b"\r\n\r\n")[2]


class UpstreamSocket(StringTransport):
    """An upstream body's transport: the relay pauses and resizes it (as twisted.web's
    TransportProxyProducer over a TCP transport, whose recv() size is C{bufferSize})."""

    bufferSize = 65536

    def __init__(self) -> None:
        super().__init__()
        self._producer = self


class Relayed:
    """An upstream body of C{length} relayed into C{client}'s request; L{feed} plays the
    upstream socket, delivering one read whenever it is not paused."""

    def __init__(self, client: ShapedClient, clock: Clock, length: int) -> None:
        self.client = client
        self.length = length
        self.sent = 0
        self.upstream = UpstreamSocket()
        self.response = FakeResponse(length, self.upstream)
        client.request.setHeader(b"content-length", b"%d" % length)
        self.relay: BodyRelay = relay_body(self.response, client.request, clock, IDLE)

    def feed(self) -> None:
        """One recv() of the upstream socket, if it is being read."""
        protocol = self.response.protocol
        if protocol is None or self.upstream.producerState != "producing":
            return
        count = min(self.upstream.bufferSize, self.length - self.sent)
        if count:
            self.sent += count
            protocol.dataReceived(b"x" * count)


@implementer(IPushProducer)
class Recording:
    """A push producer that records what it is told; with C{on_resume}, it writes that
    many bytes to C{request} each time it is resumed (as a cache sender does at once)."""

    def __init__(self, request: ShapedRequest | None = None, on_resume: int = 0) -> None:
        self.calls: list[str] = []
        self.paused = False
        self.request = request
        self.on_resume = on_resume

    def pauseProducing(self) -> None:
        self.calls.append("pause")
        self.paused = True

    def resumeProducing(self) -> None:
        self.calls.append("resume")
        self.paused = False
        if self.request is not None and self.on_resume:
            self.request.write(b"y" * self.on_resume)

    def stopProducing(self) -> None:
        self.calls.append("stop")
