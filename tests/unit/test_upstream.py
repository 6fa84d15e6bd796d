"""The real upstream HTTP client (treq over Twisted's Agent), driven over a MemoryReactor.

The resource tests inject StubTreq; these check what make_http_client itself adds:
identity bodies, no shared cookies, connection reuse, and short failure reasons.
"""

from __future__ import annotations

import gzip
from typing import Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers

from dockerproxy.config import Timeouts
from dockerproxy.failures import describe_failure
from dockerproxy.relay import Collect
from dockerproxy.upstream import (
    HIDDEN_ENCODING,
    make_http_client,
    make_pool,
    origin,
)

URL = "http://127.0.0.1:5001"


class ClientHarness:
    """make_http_client's client over a MemoryReactorClock; the test plays the server."""

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = make_pool(self.reactor)
        self.http = make_http_client(self.reactor, self.pool, Timeouts(), [])
        self.transports: list[StringTransport] = []
        self.protocols: list[Any] = []

    def request(self, path: str, headers: Headers | None = None) -> list[Any]:
        """Start a GET; connect it if it needed a new connection; return its result list."""
        connections = len(self.reactor.tcpClients)
        result: list[Any] = []
        d = self.http.request(
            "GET", URL + path, headers=headers or Headers(), allow_redirects=False, unbuffered=True
        )
        d.addBoth(result.append)
        if len(self.reactor.tcpClients) > connections:
            factory = self.reactor.tcpClients[-1][2]
            protocol = factory.buildProtocol(None)
            transport = StringTransport()
            protocol.makeConnection(transport)
            self.transports.append(transport)
            self.protocols.append(protocol)
        return result

    def sent(self) -> bytes:
        return self.transports[-1].value()

    def respond(self, raw: bytes) -> None:
        self.transports[-1].clear()
        self.protocols[-1].dataReceived(raw)


def body_of(response: Any) -> bytes:
    collect = Collect(1 << 20)
    response.deliverBody(collect)
    result: list[bytes] = []
    collect.done.addCallback(result.append)
    return result[0]


class HTTPClientTests(SynchronousTestCase):
    def test_asks_for_identity_bodies(self) -> None:
        h = ClientHarness()
        h.request("/v2/", Headers({b"accept-encoding": [b"gzip"]}))
        self.assertIn(b"\r\nAccept-Encoding: identity\r\n", h.sent())
        self.assertNotIn(b"gzip", h.sent())

    def test_encoded_bodies_are_not_decoded(self) -> None:
        h = ClientHarness()
        result = h.request("/v2/a/blobs/x")
        body = gzip.compress(b"layer bytes")
        h.respond(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        [response] = result
        self.assertEqual(response.headers.getRawHeaders(HIDDEN_ENCODING), [b"gzip"])
        self.assertNotIn(b"gzip", response.headers.getRawHeaders(b"content-encoding", []))
        self.assertEqual(response.length, len(body))
        self.assertEqual(body_of(response), body)

    def test_upstream_cookies_are_not_replayed(self) -> None:
        h = ClientHarness()
        first = h.request("/v2/")
        h.respond(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=client-a; Path=/\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(first[0].code, 200)
        h.request("/v2/library/alpine/manifests/latest")
        self.assertEqual(len(h.transports), 1, "the pooled connection is reused")
        self.assertIn(b"GET /v2/library/alpine/manifests/latest", h.sent())
        self.assertNotIn(b"client-a", h.sent())
        self.assertNotIn(b"cookie", h.sent().lower())

    def test_request_headers_are_sent(self) -> None:
        h = ClientHarness()
        h.request("/v2/", Headers({b"authorization": [b"Bearer t"], b"range": [b"bytes=1-"]}))
        self.assertIn(b"\r\nAuthorization: Bearer t\r\n", h.sent())
        self.assertIn(b"\r\nRange: bytes=1-\r\n", h.sent())

    def test_redirects_are_not_followed_by_treq(self) -> None:
        h = ClientHarness()
        result = h.request("/v2/a/blobs/x")
        h.respond(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://cdn.test/b\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self.assertEqual(result[0].code, 307)
        self.assertEqual(len(h.reactor.tcpClients), 1)


class DescribeFailureTests(SynchronousTestCase):
    def test_connection_refused(self) -> None:
        self.assertEqual(describe_failure(ConnectionRefusedError()), "connection refused")

    def test_dns(self) -> None:
        self.assertEqual(describe_failure(DNSLookupError("x")), "host name lookup failed")

    def test_connect_timeout(self) -> None:
        self.assertEqual(describe_failure(ConnectTimeoutError()), "connection timed out")

    def test_wrapped_reasons_are_unwrapped(self) -> None:
        wrapped = ResponseNeverReceived([Failure(ConnectionRefusedError())])
        self.assertEqual(describe_failure(wrapped), "connection refused")
        failed = ResponseFailed([Failure(DNSLookupError())])
        self.assertEqual(describe_failure(failed), "host name lookup failed")

    def test_tls_errors(self) -> None:
        self.assertTrue(
            describe_failure(SSL.Error("certificate verify failed")).startswith("TLS error: ")
        )

    def test_other_errors_are_one_short_line(self) -> None:
        text = describe_failure(RuntimeError("first line\nsecond line" + "x" * 500))
        self.assertEqual(text, "first line")
        self.assertLessEqual(len(describe_failure(RuntimeError("y" * 500))), 200)

    def test_errors_without_a_message_use_the_type(self) -> None:
        self.assertEqual(describe_failure(ValueError()), "ValueError")


class OriginTests(SynchronousTestCase):
    def test_default_ports(self) -> None:
        self.assertEqual(origin("https://Registry.Example/v2/"), ("https", "registry.example", 443))
        self.assertEqual(origin("http://registry.example/"), ("http", "registry.example", 80))

    def test_explicit_default_port_is_the_same_origin(self) -> None:
        self.assertEqual(origin("https://a.test:443/x"), origin("https://a.test/y"))

    def test_other_port_or_scheme_is_another_origin(self) -> None:
        self.assertNotEqual(origin("https://a.test:8443/x"), origin("https://a.test/x"))
        self.assertNotEqual(origin("http://a.test/x"), origin("https://a.test/x"))
