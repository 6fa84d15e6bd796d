"""The blob cache's unit-test harness: a started cache over a real temporary directory,
fake upstream responses whose bodies the test feeds (L{Upstream}), and clients that are
real twisted.web Requests on an HTTPChannel over a StringTransport (L{Client}), which can
also push back like a TCP socket with a send buffer. The clock is a Clock.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.server import Site

from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.fills import Fallback
from dockerproxy.cache.flocks import Claim, FillLocks
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.digests import Digest, of
from dockerproxy.shaping import ByteBudget, ShapedRequest
from tests.unit.fakes import Capture, ClientTransport, FakeResponse, scratch_dir, sync_disk

IDLE = 5.0
BODY = bytes(range(256)) * 4  # 1 KiB


def sha256(data: bytes) -> Digest:
    return of(data)


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body's data, and whether its terminating chunk arrived."""
    data = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return data, True
        data += rest[:size]
        body = rest[size + 2 :]
    return data, False


# --------------------------------------------------------------------------- the upstream side


class Upstream:
    """One fill in progress and the upstream connection feeding it."""

    def __init__(
        self, cache: BlobCache, digest: Digest, length: int | object, claim: Claim | None = None
    ) -> None:
        self.transport = StringTransport()
        self.response = FakeResponse(length, self.transport)
        self.fill = cache.start_fill(digest, self.response, claim=claim)
        self.outcome: list[object] = []
        self.fill.done.addBoth(self.outcome.append)

    def sends(self, data: bytes) -> None:
        assert self.response.protocol is not None
        self.response.protocol.dataReceived(data)

    def ends(self, reason: Failure | None = None) -> None:
        assert self.response.protocol is not None
        self.response.protocol.connectionLost(reason or Failure(ResponseDone()))


class RecordingFallback:
    """A L{Fallback} that records what the cache hands over; the test fires each answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.answers: list[Deferred[bool]] = []

    def rest(self, first: int, last: int | None) -> Deferred[bool]:
        self.calls.append(("rest", first, last))
        self.answers.append(Deferred())
        return self.answers[-1]

    def whole(self) -> Deferred[bool]:
        self.calls.append(("whole",))
        self.answers.append(Deferred())
        return self.answers[-1]


# --------------------------------------------------------------------------- the client side


class Client:
    """One client connection with one request for a blob, rendered by nobody yet."""

    def __init__(
        self,
        clock: Clock,
        method: bytes = b"GET",
        headers: bytes = b"",
        buffer_size: int | None = None,
        budget: ByteBudget | None = None,
    ) -> None:
        resource = Capture()
        site = Site(resource, reactor=clock)
        if budget is not None:  # a client with a bandwidth limit, as the proxy's Site has
            site.requestFactory = ShapedRequest
        self.protocol = site.buildProtocol(None)
        self.transport = ClientTransport(buffer_size)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(
            method + b" /v2/a/blobs/x HTTP/1.1\r\nHost: mirror\r\n" + headers + b"\r\n"
        )
        self.request = resource.requests[0]
        if budget is not None:
            self.request.budget = budget
        self.channel = self.transport.producer
        self.outcome: list[object] = []

    def served(
        self,
        cache: BlobCache,
        digest: Digest,
        byte_range: tuple[int, int | None] | None = None,
        fallback: Fallback | None = None,
    ) -> Client:
        cache.serve(self.request, digest, byte_range, fallback).addBoth(self.outcome.append)
        return self

    def goes_away(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone("client closed")))

    def status(self) -> int:
        return int(self.transport.value().split(b" ", 2)[1])

    def header(self, name: bytes) -> bytes | None:
        head = self.transport.value().partition(b"\r\n\r\n")[0]
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b": ")
            if key.lower() == name.lower():
                return value
        return None

    def body(self) -> bytes:
        return self.transport.value().partition(b"\r\n\r\n")[2]


class Harness:
    """A started cache over a real directory, with a Clock."""

    def __init__(
        self,
        root: Path,
        max_size: int | None = None,
        clock: Clock | None = None,
        shared: bool = False,
    ) -> None:
        """C{shared}: one of several workers on C{root} (each Harness one worker)."""
        self.root = root
        self.clock = clock or Clock()
        self.store = FilesystemStore(root, fsync=False)
        self.locks = FillLocks(self.store.tmp_dir) if shared else None
        self.cache = BlobCache(
            self.store, self.clock, max_size, disk=sync_disk(), idle_timeout=IDLE, locks=self.locks
        )
        self.cache.start()

    def upstream(
        self,
        data: bytes,
        length: int | object | None = None,
        digest: Digest | None = None,
        claim: Claim | None = None,
    ) -> Upstream:
        length = len(data) if length is None else length
        return Upstream(self.cache, digest or sha256(data), length, claim)

    def put(self, data: bytes) -> Digest:
        """A committed blob, filled the normal way."""
        upstream = self.upstream(data)
        upstream.sends(data)
        upstream.ends()
        assert upstream.outcome == [True], upstream.outcome
        self.clock.advance(1)
        return sha256(data)

    def client(self, **kwargs: object) -> Client:
        return Client(self.clock, **kwargs)  # type: ignore[arg-type]

    def tmp_files(self) -> list[Path]:
        return list((self.root / "tmp").iterdir())


class CacheTestCase(SynchronousTestCase):
    max_size: int | None = None

    def setUp(self) -> None:
        self.h = Harness(scratch_dir(self), self.max_size)
        self.cache = self.h.cache
