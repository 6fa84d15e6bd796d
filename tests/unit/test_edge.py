"""The client's request, read once at the edge: one value per header, repeats refused; through
the whole Site, a request the proxy cannot read unambiguously reaches no upstream."""

from __future__ import annotations

import pytest
from twisted.web.http_headers import Headers

from dockerproxy.edge import SINGLETONS, read_client_request
from dockerproxy.errors import RegistryError
from dockerproxy.networks import parse_network
from tests.unit.proxysite import DIGEST, ProxyTestCase


def headers(*pairs: tuple[bytes, bytes]) -> Headers:
    out = Headers()
    for name, value in pairs:
        out.addRawHeader(name, value)
    return out


@pytest.mark.parametrize("name", SINGLETONS)
def test_a_repeated_singleton_header_is_refused(name: bytes) -> None:
    with pytest.raises(RegistryError) as caught:
        read_client_request(headers((name, b"a"), (name.upper(), b"b")), {})
    assert (caught.value.status, caught.value.code) == (400, "INVALID_REQUEST")
    assert name.decode() in caught.value.message


@pytest.mark.parametrize("second", [b"Basic Og==", b"Bearer made-up", b"Bearer t"])
def test_two_authorizations_are_refused_whatever_the_second(second: bytes) -> None:
    with pytest.raises(RegistryError):
        read_client_request(
            headers((b"authorization", b"Bearer t"), (b"authorization", second)), {}
        )


def test_anonymous_credentials_read_as_none() -> None:
    for value in (b"Basic Og==", b"basic  Og== ", b"Bearer dockerproxy-anonymous"):
        assert read_client_request(headers((b"authorization", value)), {}).authorization is None
    assert read_client_request(Headers(), {}).authorization is None


def test_a_repeated_ns_parameter_is_refused() -> None:
    with pytest.raises(RegistryError) as caught:
        read_client_request(Headers(), {b"ns": [b"docker.io", b"ghcr.io"]})
    assert caught.value.status == 400


def test_an_invalid_ns_is_refused() -> None:
    with pytest.raises(RegistryError) as caught:
        read_client_request(Headers(), {b"ns": [b"../etc"]})
    assert caught.value.code == "NAME_INVALID"


def test_list_headers_are_merged_not_refused() -> None:
    client = read_client_request(
        headers(
            (b"if-none-match", b'"a"'),
            (b"if-none-match", b'"b"'),
            (b"accept", b"x/y"),
            (b"accept", b"z/w"),
        ),
        {},
    )
    assert client.if_none_match == b'"a", "b"'
    assert client.accept == b"x/y, z/w"


def test_a_malformed_host_reads_as_none() -> None:
    assert read_client_request(headers((b"host", b"evil.test/x")), {}).host is None
    assert (
        read_client_request(headers((b"host", b"Mirror.Test:5000")), {}).host == "mirror.test:5000"
    )


# --------------------------------------------------------------------------- through the whole Site


class EdgeTests(ProxyTestCase):
    """A request the proxy cannot read unambiguously reaches no resource and no upstream."""

    def test_two_authorization_headers_get_a_400_before_any_upstream_request(self) -> None:
        for path in (
            "/v2/",
            "/v2/auth?scope=repository:library/alpine:pull",
            f"/v2/library/alpine/blobs/{DIGEST}",
            "/v2/library/alpine/manifests/3",
            "/v2/library/alpine/tags/list",
            "/",
        ):
            response = self.fetch(
                "GET", path, [("Authorization", "Bearer valid"), ("Authorization", "Basic Og==")]
            )
            entry = self.assertRegistryError(response, 400, "INVALID_REQUEST")
            self.assertIn("authorization", entry["message"])
        self.assertEqual(self.upstream.seen, [])

    def test_two_host_headers_get_a_400(self) -> None:
        response = self.fetch("GET", "/v2/", [("Host", "evil.test")])
        self.assertRegistryError(response, 400, "INVALID_REQUEST")
        self.assertEqual(self.upstream.seen, [])

    def test_head_gets_the_status_without_a_body(self) -> None:
        response = self.fetch(
            "HEAD",
            "/v2/library/alpine/manifests/3",
            [("Range", "bytes=0-1"), ("Range", "bytes=5-6")],
        )
        self.assertEqual((response.status, response.body), (400, b""))


TRUSTED = (parse_network("10.0.0.0/8"),)


def address(peer: str, *pairs: tuple[bytes, bytes]) -> str:
    return read_client_request(headers(*pairs), {}, peer=peer, trusted=TRUSTED).address


def test_the_client_address_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    spoofed = (b"x-forwarded-for", b"203.0.113.9")
    assert address("198.51.100.7", spoofed) == "198.51.100.7"
    assert address("10.0.0.2", spoofed) == "203.0.113.9"
    assert address("10.0.0.2") == "10.0.0.2"


def test_forwarded_hops_are_walked_from_the_nearest_past_trusted_proxies() -> None:
    chain = (b"x-forwarded-for", b"198.51.100.1, 203.0.113.9, 10.0.0.5")
    assert address("10.0.0.2", chain) == "203.0.113.9", "the client may forge the first hop"
    assert (
        address("10.0.0.2", (b"forwarded", b'for=192.0.2.60;proto=http, for="[2001:db8::7]"'))
        == "2001:db8::7"
    )
    assert address("10.0.0.2", (b"x-forwarded-for", b"garbage, 10.0.0.9")) == "10.0.0.9"


def test_a_request_id_comes_from_a_trusted_proxy_or_is_made() -> None:
    given = headers((b"x-request-id", b"abc-123"))
    assert read_client_request(given, {}, peer="10.0.0.2", trusted=TRUSTED).request_id == "abc-123"
    made = read_client_request(given, {}, peer="198.51.100.7", trusted=TRUSTED).request_id
    assert made != "abc-123" and len(made) == 16
    bad = headers((b"x-request-id", b"<script>"))
    assert read_client_request(bad, {}, peer="10.0.0.2", trusted=TRUSTED).request_id != "<script>"
