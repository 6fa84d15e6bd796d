"""A proxy Site with the client limits set (L{ChannelTestCase}), for the channel's and the
drain's tests: connections made by hand over StringTransports, refusals checked as registry
JSON errors that close the connection."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from dockerproxy.channel import LINGER, ProxyChannel
from dockerproxy.config import ClientLimits
from dockerproxy.site import ProxySite
from tests.unit.proxysite import MIRROR, ProxyTestCase, Response, parse_response

HEADER_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0
LIMITS = ClientLimits(
    client_header_timeout=HEADER_TIMEOUT, client_idle_timeout=IDLE_TIMEOUT, max_connections=3
)


def head(path: str = "/nope", *lines: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {MIRROR}", *lines, "", ""]).encode()


class ChannelTestCase(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.site.limits = LIMITS

    def connect(
        self, transport: StringTransport | None = None, site: ProxySite | None = None
    ) -> tuple[ProxyChannel, StringTransport]:
        transport = transport or StringTransport()
        channel = (site or self.site).buildProtocol(None)
        channel.makeConnection(transport)
        return channel, transport

    def assertRefused(self, transport: StringTransport, status: int, code: str) -> Response:
        """A registry JSON error that closes the connection, and nothing else sent."""
        response = parse_response(transport.value(), "GET")
        self.assertRegistryError(response, status, code)
        self.assertEqual(response.header("connection"), "close")
        self.assertEqual(response.header("docker-distribution-api-version"), "registry/2.0")
        self.assertEqual(transport.value(), response.raw[: len(transport.value())])
        self.assertTrue(transport.value().endswith(response.body))
        return response

    def assertClosedAfterLinger(self, transport: StringTransport) -> None:
        self.assertFalse(transport.disconnected, "still reading what the client sends")
        self.clock.advance(LINGER)
        self.assertTrue(transport.disconnected)
