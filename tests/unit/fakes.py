"""Fakes shared by the relay and blob-cache unit tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer


@implementer(IResponse)
class FakeResponse:
    """An upstream response whose body arrives over C{transport}, fed by the test."""

    version = (b"HTTP", 1, 1)
    phrase = b"OK"
    request = None
    previousResponse = None

    def __init__(self, length: int | object, transport: StringTransport, code: int = 200) -> None:
        self.code = code
        self.headers = Headers()
        self.length = length
        self.transport = transport
        self.protocol: IProtocol | None = None

    def deliverBody(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response


class ClientTransport(StringTransport):
    """The client's socket: records abortConnection apart from loseConnection and the size of
    each write; with C{buffer_size}, it pauses its producer as TCP would."""

    aborted = False

    def __init__(self, buffer_size: int | None = None) -> None:
        super().__init__()
        self.buffer_size = buffer_size
        self.unsent = 0
        self.paused_producer = False
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(len(data))
        self.unsent += len(data)
        if self.buffer_size is not None and self.producer is not None \
                and not self.paused_producer and self.unsent > self.buffer_size:
            self.paused_producer = True
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The kernel took everything: resume the producer, as a TCP transport does."""
        self.unsent = 0
        if self.paused_producer:
            self.paused_producer = False
            self.producer.resumeProducing()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Capture(Resource):
    """Keeps every request it is asked to render, and answers none of them."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> object:
        self.requests.append(request)
        return NOT_DONE_YET


def lost(*reasons: BaseException) -> Failure:
    """How twisted.web.client reports a body cut short: ResponseFailed around the cause."""
    return Failure(ResponseFailed([Failure(r) for r in reasons or (ConnectionLost(),)]))


def scratch_dir(case: SynchronousTestCase) -> Path:
    """A fresh temporary directory removed after the test (trial's mktemp() would
    create it under the current directory, the checkout)."""
    path = Path(tempfile.mkdtemp(prefix="dockerproxy-test-"))
    case.addCleanup(shutil.rmtree, path, True)
    return path
