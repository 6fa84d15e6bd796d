"""The client's request, read once at the edge: one value per header, repeats refused."""

from __future__ import annotations

import pytest
from twisted.web.http_headers import Headers

from dockerproxy.edge import SINGLETONS, read_client_request
from dockerproxy.errors import RegistryError


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
        read_client_request(headers((b"authorization", b"Bearer t"),
                                    (b"authorization", second)), {})


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
    client = read_client_request(headers((b"if-none-match", b'"a"'),
                                         (b"if-none-match", b'"b"'),
                                         (b"accept", b"x/y"), (b"accept", b"z/w")), {})
    assert client.if_none_match == b'"a", "b"'
    assert client.accept == b"x/y, z/w"


def test_a_malformed_host_reads_as_none() -> None:
    assert read_client_request(headers((b"host", b"evil.test/x")), {}).host is None
    assert read_client_request(headers((b"host", b"Mirror.Test:5000")), {}).host \
        == "mirror.test:5000"
