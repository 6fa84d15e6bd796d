"""Warming the cache: pulling an image through the proxy as a client would, bytes discarded.

L{Warmer} speaks the registry API to one proxy like a pulling client: C{GET /v2/}'s
401 points it at the proxy's C{/v2/auth} for a pull token (L{TokenLogin}), then the
manifest by tag (every Accept a client sends: OCI index, Docker manifest list and
both single-manifest types), for an index the manifests of the platforms asked for
by digest, then their config and layer blobs. Bodies stream: each chunk goes into a
sha256 and is dropped, so a blob costs no memory; a manifest or blob whose digest or
size is wrong fails the image. Blobs are fetched C{concurrency} at a time.

It is the same code for C{dockerproxy warm} (a CLI, L{dockerproxy.warmcli}) and the
daemon's scheduled refresh (L{dockerproxy.warmservice}), which pulls through its own
listener with a token it signs itself: whatever the proxy does for a client's pull
(routing, the cache's fills and access records, tag revalidation) it does for a warm
pull, so the next client's pull is a hit.

Re-running is the resumption: a blob already cached is a cache hit, read from the
proxy's disk; a fill an interrupted run left unfinished was abandoned by the proxy
and is fetched again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    FirstError,
    gatherResults,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from dockerproxy import digests
from dockerproxy.auth import Challenge
from dockerproxy.challenges import pick_challenge
from dockerproxy.imagerefs import ImageRef, Platform, chosen_manifests

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES)).encode()
MAX_MANIFEST = 4 * 1024 * 1024  # as the proxy's own bound (the distribution spec's)
MAX_SMALL = 64 * 1024  # an error's or a token's body
IDLE_TIMEOUT = 60.0  # seconds a body may stall, as the proxy's own default for upstreams


class WarmError(Exception):
    """Why one image could not be warmed, in a line."""


class Progress(Protocol):
    """What a warm run reports as it goes (a progress bar, or nothing)."""

    def add_bytes(self, image: ImageRef, size: int) -> None:
        """Blobs of C{size} bytes in all are now known to be wanted."""

    def received(self, image: ImageRef, size: int) -> None:
        """C{size} more bytes arrived."""


class NoProgress:
    def add_bytes(self, image: ImageRef, size: int) -> None:
        pass

    def received(self, image: ImageRef, size: int) -> None:
        pass


@dataclass
class Outcome:
    """One image's warm run: C{error} None when every manifest and blob arrived intact."""

    image: ImageRef
    error: str | None = None
    manifests: int = 0
    blobs: int = 0
    size: int = 0  # blob bytes received

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.error is not None:
            return f"failed {self.image}: {self.error}"
        return f"ok {self.image}: {self.manifests} manifests, {self.blobs} blobs, {self.size} bytes"


# Given the 401's challenge, the Authorization to send (None: give up, the 401 stands).
Authorize = Callable[[Challenge], Awaitable[bytes | None]]


class HTTP(Protocol):
    """treq's client interface, as much of it as warming uses (treq.testing.StubTreq too)."""

    def request(self, method: str, url: str, *, headers: Headers, timeout: float) -> Any: ...

    def collect(self, response: IResponse, collector: Callable[[bytes], None]) -> Any: ...


async def read_small(http: HTTP, response: IResponse, limit: int = MAX_SMALL) -> bytes:
    """A small body (an error, a token), read whole; a larger one fails, unread."""
    chunks: list[bytes] = []
    size = [0]

    def keep(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > limit:
            raise WarmError(f"an answer of more than {limit} bytes where a small one was due")
        chunks.append(data)

    await http.collect(response, keep)
    return b"".join(chunks)


def _headers(response: IResponse, name: bytes) -> str:
    return (response.headers.getRawHeaders(name) or [b""])[0].decode("latin-1")


@dataclass
class ProxyClient:
    """Requests to one proxy (C{base}: C{scheme://host:port}), logging in when challenged.

    A token is kept per scope and used until a request with it is refused again.
    """

    http: HTTP
    base: str
    authorize: Authorize | None = None
    timeout: float = 60.0  # seconds to the response headers
    _tokens: dict[str, bytes] = field(default_factory=dict, init=False)

    async def get(self, path: str, accept: bytes | None = None, scope: str = "") -> IResponse:
        """GET C{path}; on a 401, log in with its challenge once and ask again."""
        response = await self._send(path, accept, self._tokens.get(scope))
        if response.code != 401 or self.authorize is None:
            return response
        challenge = pick_challenge(response.headers)
        await read_small(self.http, response)
        if challenge is None:
            return response
        authorization = await self.authorize(challenge)
        if authorization is None:
            return response
        self._tokens[scope] = authorization
        return await self._send(path, accept, authorization)

    async def _send(self, path: str, accept: bytes | None, authorization: bytes | None) -> Any:
        headers = Headers({b"user-agent": [b"dockerproxy-warm"]})
        if accept is not None:
            headers.setRawHeaders(b"accept", [accept])
        if authorization is not None:
            headers.setRawHeaders(b"authorization", [authorization])
        return await self.http.request(
            "GET", self.base + path, headers=headers, timeout=self.timeout
        )


@dataclass
class TokenLogin:
    """Follows a Bearer challenge to its realm (the proxy's C{/v2/auth}) for a pull token,
    with Basic credentials when given (anonymous otherwise), as C{docker pull} does."""

    http: HTTP
    basic: bytes | None = None  # the Basic Authorization value, if logging in as a user
    timeout: float = 60.0

    async def __call__(self, challenge: Challenge) -> bytes | None:
        if challenge.scheme != "bearer" or not challenge.realm:
            return None
        query = {k: v for k, v in challenge.params.items() if k in ("service", "scope")}
        realm = challenge.realm
        url = f"{realm}{'&' if urlsplit(realm).query else '?'}{urlencode(query)}"
        headers = Headers({b"user-agent": [b"dockerproxy-warm"]})
        if self.basic is not None:
            headers.setRawHeaders(b"authorization", [self.basic])
        response = await self.http.request("GET", url, headers=headers, timeout=self.timeout)
        body = await read_small(self.http, response)
        if response.code != 200:
            raise WarmError(f"login refused: {response.code} from {realm}")
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise WarmError(f"no token in the answer of {realm}")
        return b"Bearer " + token.encode("latin-1")


class Warmer:
    """Warms images through C{client}: one image at a time, its blobs C{concurrency} at once.

    C{platforms} None warms every manifest of an index.
    """

    def __init__(
        self,
        client: ProxyClient,
        platforms: Sequence[Platform] | None,
        concurrency: int = 4,
        progress: Progress | None = None,
        clock: IReactorTime | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.client = client
        self.platforms = platforms
        self.semaphore = DeferredSemaphore(concurrency)
        self.progress: Progress = progress or NoProgress()
        self.clock = clock  # for idle_timeout (None: no timer, in tests that need none)
        self.idle_timeout = idle_timeout

    async def warm(self, image: ImageRef) -> Outcome:
        """Warm C{image}; every failure but a cancellation ends up in the L{Outcome}."""
        outcome = Outcome(image)
        try:
            await self._warm(image, outcome)
        except CancelledError:
            raise
        except WarmError as e:
            outcome.error = str(e)
        except Exception as e:  # a connection refused, a timeout: one line, no traceback
            outcome.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return outcome

    async def _warm(self, image: ImageRef, outcome: Outcome) -> None:
        scope = f"repository:{image.name}:pull"
        media_type, document = await self._manifest(image, image.reference, scope)
        outcome.manifests += 1
        manifests = [document]
        if media_type in INDEX_TYPES or "manifests" in document:
            entries = chosen_manifests(document, self.platforms)
            if not entries:
                asked = ", ".join(str(p) for p in self.platforms or ())
                raise WarmError(f"the index has no manifest for {asked}")
            manifests = []
            for entry in entries:
                _, single = await self._manifest(image, str(entry.get("digest")), scope)
                outcome.manifests += 1
                manifests.append(single)
        wanted = _blobs(manifests)
        self.progress.add_bytes(image, sum(wanted.values()))

        def fetch(digest: str, size: int) -> Deferred[int]:
            return Deferred.fromCoroutine(self._blob(image, scope, digest, size))

        sizes = await _all([self.semaphore.run(fetch, d, s) for d, s in wanted.items()])
        outcome.blobs = len(sizes)
        outcome.size = sum(sizes)

    async def _manifest(
        self, image: ImageRef, reference: str, scope: str
    ) -> tuple[str, Mapping[str, Any]]:
        path = f"/v2/{image.name}/manifests/{reference}"
        response = await self.client.get(path, ACCEPT, scope)
        chunks: list[bytes] = []
        received = [0]

        def keep(data: bytes) -> None:
            received[0] += len(data)
            if received[0] > MAX_MANIFEST:
                raise WarmError(f"manifest {reference} is larger than {MAX_MANIFEST} bytes")
            chunks.append(data)

        await self._collect(response, keep)
        body = b"".join(chunks)
        if response.code != 200:
            raise WarmError(f"manifest {reference}: {_error(response.code, body)}")
        named = digests.parse_or_none(reference) or digests.parse_or_none(
            _headers(response, b"docker-content-digest")
        )
        if named is not None and not named.matches(body):
            raise WarmError(f"manifest {reference} does not match its digest {named}")
        try:
            document = json.loads(body)
        except ValueError:
            raise WarmError(f"manifest {reference} is not JSON") from None
        if not isinstance(document, dict):
            raise WarmError(f"manifest {reference} is not a JSON object")
        media_type = _headers(response, b"content-type").split(";")[0].strip()
        return document.get("mediaType") or media_type, document

    async def _blob(self, image: ImageRef, scope: str, digest: str, size: int) -> int:
        """GET the blob to its end, hashing as it streams; its length."""
        expected = digests.parse_or_none(digest)
        if expected is None:
            raise WarmError(f"a manifest names a digest the proxy cannot check: {digest!r}")
        response = await self.client.get(f"/v2/{image.name}/blobs/{digest}", scope=scope)
        if response.code != 200:
            body = await self._small(response)
            raise WarmError(f"blob {digest}: {_error(response.code, body)}")
        hasher = expected.hasher()
        received = [0]

        def hash_chunk(data: bytes) -> None:
            hasher.update(data)
            received[0] += len(data)
            self.progress.received(image, len(data))

        await self._collect(response, hash_chunk)
        if hasher.hexdigest() != expected.hex or received[0] != size:
            raise WarmError(f"blob {digest} arrived with another digest or size ({received[0]})")
        return received[0]

    async def _collect(self, response: IResponse, collector: Callable[[bytes], None]) -> None:
        """Read the body to its end; one that stalls for C{idle_timeout} seconds fails (a
        run stuck on it would hold every later run of the refresh)."""
        timer: list[IDelayedCall] = []
        stalled: list[bool] = []

        def chunk(data: bytes) -> None:
            if timer and timer[0].active():
                timer[0].reset(self.idle_timeout)
            collector(data)

        done = self.client.http.collect(response, chunk)
        if self.clock is not None:

            def stall() -> None:
                stalled.append(True)
                done.cancel()

            timer.append(self.clock.callLater(self.idle_timeout, stall))
        try:
            await done
        except CancelledError:
            if stalled:
                raise WarmError(f"the body stalled for {self.idle_timeout:g} s") from None
            raise
        finally:
            if timer and timer[0].active():
                timer[0].cancel()

    async def _small(self, response: IResponse) -> bytes:
        """An error's body: what fits in L{MAX_SMALL} (the rest read and dropped)."""
        chunks: list[bytes] = []
        size = [0]

        def keep(data: bytes) -> None:
            if size[0] < MAX_SMALL:
                chunks.append(data)
            size[0] += len(data)

        await self._collect(response, keep)
        return b"".join(chunks)[:MAX_SMALL]


async def _all(jobs: list[Deferred[int]]) -> list[int]:
    """Every job's result; at the first failure the others are cancelled and it is raised."""
    try:
        return await gatherResults(jobs, consumeErrors=True)
    except FirstError as e:
        for job in jobs:
            job.cancel()
        e.subFailure.raiseException()
        raise  # not reached: raiseException raises


def _blobs(manifests: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The config and layer blobs the manifests name, each once, with their sizes."""
    wanted: dict[str, int] = {}
    for manifest in manifests:
        descriptors = [manifest.get("config"), *(manifest.get("layers") or ())]
        for descriptor in descriptors:
            if not isinstance(descriptor, Mapping):
                continue
            digest, size = descriptor.get("digest"), descriptor.get("size")
            if not isinstance(digest, str) or not isinstance(size, int):
                raise WarmError("a manifest has a descriptor without digest and size")
            wanted[digest] = size
    return wanted


def _error(code: int, body: bytes) -> str:
    """A registry error's first message, or the bare status."""
    try:
        message = json.loads(body)["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        message = None
    return f"{code} {message}" if message else f"{code}"
