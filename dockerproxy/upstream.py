"""The HTTP client for upstream registries: one treq client over a pool the proxy owns.

Bodies are never buffered here: callers get the raw L{IResponse} and stream it.
Redirects are followed on the proxy side so clients never see a CDN, and the
client's Authorization never travels to a host other than the one it was meant for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urljoin, urlsplit

from OpenSSL import SSL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet import error as net_error

# twisted.internet.ssl has no public name for this interface; it is how a trust
# root adds CAs to an OpenSSL context (platform trust plus an operator's bundle).
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from dockerproxy import errors
from dockerproxy.config import Timeouts, UpstreamConfig
from dockerproxy.failures import describe_failure
from dockerproxy.meters import NO_METERS, Meters
from dockerproxy.relay import BodyStalled, Collect, discard

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
# Upstream response headers renamed beneath treq so its gzip decoder leaves bodies alone.
HIDDEN_ENCODING = b"x-dockerproxy-content-encoding"


@implementer(IOpenSSLTrustRoot)
class PlatformAndFiles:
    """Trust the platform's CAs and the operator's extra CA bundles."""

    def __init__(self, ca_files: Sequence[str]) -> None:
        self.ca_files = list(ca_files)

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        for path in self.ca_files:
            context.load_verify_locations(path)


@implementer(IPolicyForHTTPS)
class UpstreamTLSPolicy:
    """Verified TLS for every upstream, realm and redirect target."""

    def __init__(self, ca_files: Sequence[str]) -> None:
        self._trust = PlatformAndFiles(ca_files)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust)


def tls_policy(ca_files: Sequence[str]) -> IPolicyForHTTPS:
    return UpstreamTLSPolicy(ca_files) if ca_files else BrowserLikePolicyForHTTPS()


@implementer(IAgent)
class IdentityAgent:
    """Asks for unencoded bodies and hides any Content-Encoding from treq's decoder.

    treq always wraps its agent in a gzip decoder; a relayed blob must arrive
    byte for byte as the upstream sent it or its digest breaks.
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        headers = headers.copy() if headers is not None else Headers()
        headers.setRawHeaders(b"accept-encoding", [b"identity"])
        d = self._agent.request(method, uri, headers, bodyProducer)
        return d.addCallback(_hide_content_encoding)


def _hide_content_encoding(response: IResponse) -> IResponse:
    encodings = response.headers.getRawHeaders(b"content-encoding")
    if encodings:
        response.headers.removeHeader(b"content-encoding")
        response.headers.setRawHeaders(HIDDEN_ENCODING, encodings)
    return response


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS without certificate or host name checks, for an upstream marked C{insecure}."""

    def __init__(self, context: SSL.Context, hostname: bytes) -> None:
        self._context = context
        self._hostname = hostname

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_tlsext_host_name(self._hostname)
        return connection


@implementer(IPolicyForHTTPS)
class InsecurePolicy:
    def __init__(self) -> None:
        self._context = CertificateOptions(verify=False).getContext()

    def creatorForNetloc(self, hostname: bytes, port: int) -> _Unverified:
        return _Unverified(self._context, hostname)


def make_pool(reactor: IReactorTime) -> HTTPConnectionPool:
    """The persistent connection pool every upstream client shares; its owner closes it."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    pool.cachedConnectionTimeout = 60
    return pool


def make_http_client(
    reactor: IReactorTime,
    pool: HTTPConnectionPool,
    timeouts: Timeouts,
    ca_files: Sequence[str],
    insecure: bool = False,
) -> HTTPClient:
    """A treq client over C{pool} with its own TLS trust and connect timeout."""
    policy = InsecurePolicy() if insecure else tls_policy(ca_files)
    agent = Agent(reactor, contextFactory=policy, connectTimeout=timeouts.connect, pool=pool)
    # treq keeps one cookie jar for every request the client makes: with the default
    # jar a cookie an upstream set for one proxy client would be sent for all others.
    no_cookies = IndexableCookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return HTTPClient(IdentityAgent(agent), cookiejar=no_cookies)


@dataclass
class Fetched:
    """An upstream response, after any redirects."""

    response: IResponse


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class UpstreamClient:
    """Makes upstream requests with timeouts, safe redirects and registry-style errors."""

    def __init__(
        self,
        http: HTTPClient,
        clock: IReactorTime,
        timeouts: Timeouts,
        registry: str = "-",
        meters: Meters = NO_METERS,
    ) -> None:
        self.http = http
        self.clock = clock
        self.timeouts = timeouts
        self.registry = registry  # its name, as the metrics label it
        self.meters = meters

    async def request(self, method: bytes, url: str, headers: Headers) -> IResponse:
        """One request, unbuffered, with the headers timeout; upstream failures become 502/504."""
        d = self.http.request(
            method.decode("ascii"), url, headers=headers, allow_redirects=False, unbuffered=True
        )
        # Cancelling an Agent request fails it with ResponseNeverReceived, not
        # CancelledError, so a flag (not Deferred.addTimeout) tells a timeout apart.
        timed_out: list[bool] = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(self.timeouts.headers, expire)
        try:
            response = await d
        except Exception as e:
            if timed_out or not isinstance(e, CancelledError):  # not a client that left
                timeout = timed_out or isinstance(e, net_error.TimeoutError)
                self.meters.upstream_failed(self.registry, "timeout" if timeout else "error")
            if timed_out:
                raise errors.gateway_timeout(
                    _site(url), f"no response headers within {self.timeouts.headers:g} seconds"
                ) from None
            if isinstance(e, CancelledError):
                raise
            if isinstance(e, net_error.TimeoutError):
                raise errors.gateway_timeout(
                    _site(url), f"no connection within {self.timeouts.connect:g} seconds"
                ) from None
            raise errors.bad_gateway(_site(url), describe_failure(e)) from None
        finally:
            if timer.active():
                timer.cancel()
        self.meters.upstream_answered(self.registry, method, response)
        return response

    async def fetch(self, method: bytes, url: str, headers: Headers) -> Fetched:
        """Request C{url}, following redirects with the same method and Range.

        Authorization goes only to the origin it was sent for: once a redirect
        leaves that origin (to a CDN with presigned URLs), it is dropped for good.
        """
        start = origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self.request(method, url, headers)
            location = response.headers.getRawHeaders(b"location")
            if response.code not in REDIRECT_CODES or not location:
                return Fetched(response)
            await discard(response)
            url = urljoin(url, location[0].decode("latin-1").strip())
            if urlsplit(url).scheme not in ("http", "https"):
                raise errors.bad_gateway(_site(url), f"redirect to unsupported URL {url!r}")
            if origin(url) != start and headers.hasHeader(b"authorization"):
                headers = headers.copy()
                headers.removeHeader(b"authorization")
            if response.code == 303 and method != b"HEAD":
                method = b"GET"
        raise errors.bad_gateway(_site(url), f"more than {MAX_REDIRECTS} redirects")

    async def get_small(
        self, url: str, headers: Headers, limit: int = 1024 * 1024
    ) -> tuple[IResponse, bytes]:
        """GET a small document (a challenge or a token), following redirects as a
        client would, bounded in size and in time."""
        fetched = await self.fetch(b"GET", url, headers)
        return fetched.response, await self.read_small(fetched.response, url, limit)

    async def read_small(self, response: IResponse, url: str, limit: int) -> bytes:
        """A small body, whole: a 502 past C{limit} bytes, a 504 once it stalls for the
        idle timeout (a body that stops after its headers must not hold the client)."""
        collector = Collect(limit, self.clock, self.timeouts.idle)
        response.deliverBody(collector)
        try:
            return await collector.done
        except BodyStalled as e:
            raise errors.gateway_timeout(_site(url), str(e)) from None
        except Exception as e:
            raise errors.bad_gateway(_site(url), describe_failure(e)) from None


class UpstreamClients:
    """One L{UpstreamClient} per upstream, made on first use by C{make}."""

    def __init__(self, make: Callable[[UpstreamConfig], UpstreamClient]) -> None:
        self._make = make
        self._clients: dict[tuple[str, str], UpstreamClient] = {}

    def for_upstream(self, upstream: UpstreamConfig) -> UpstreamClient:
        key = (upstream.name, upstream.url)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._make(upstream)
        return client


def _site(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
