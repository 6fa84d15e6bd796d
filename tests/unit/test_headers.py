"""Which headers cross the proxy, in each direction."""

from __future__ import annotations

from twisted.web.http_headers import Headers

from dockerproxy.edge import ClientRequest, read_client_request
from dockerproxy.headers import (
    USER_AGENT,
    relayed_response_headers,
    upstream_request_headers,
)

DOCKERD_ACCEPT = [
    b"application/vnd.docker.distribution.manifest.v2+json",
    b"application/vnd.docker.distribution.manifest.list.v2+json",
    b"application/vnd.oci.image.index.v1+json",
    b"application/vnd.oci.image.manifest.v1+json",
    b"application/vnd.docker.distribution.manifest.v1+prettyjws",
    b"application/json",
]


def headers(**values: list[bytes] | bytes) -> Headers:
    """Headers from keyword arguments: underscores become dashes, bytes become one value."""
    out = Headers()
    for name, value in values.items():
        out.setRawHeaders(
            name.replace("_", "-").encode(), [value] if isinstance(value, bytes) else value
        )
    return out


def client(**values: list[bytes] | bytes) -> ClientRequest:
    return read_client_request(headers(**values), {})


def forwarded(**values: list[bytes] | bytes) -> dict[bytes, list[bytes]]:
    return {
        name.lower(): list(v)
        for name, v in upstream_request_headers(client(**values)).getAllRawHeaders()
    }


def relayed(upstream: Headers) -> dict[bytes, list[bytes]]:
    return dict(relayed_response_headers(upstream))


# --------------------------------------------------------------------------- requests


def test_several_accept_lines_become_one() -> None:
    assert forwarded(accept=DOCKERD_ACCEPT)[b"accept"] == [b", ".join(DOCKERD_ACCEPT)]


def test_accept_lists_are_normalised() -> None:
    assert client(accept=[b"a/b,c/d", b" e/f ,, ", b""]).accept == b"a/b, c/d, e/f"


def test_no_accept() -> None:
    assert client().accept is None
    assert b"accept" not in forwarded()


def test_empty_accept_is_not_forwarded() -> None:
    assert b"accept" not in forwarded(accept=[b"", b" , "])


def test_user_agent_is_the_proxys() -> None:
    assert forwarded(user_agent=b"docker/27.0")[b"user-agent"] == [USER_AGENT]


def test_bearer_authorization_is_forwarded() -> None:
    assert forwarded(authorization=b"Bearer abc.def.ghi")[b"authorization"] == [
        b"Bearer abc.def.ghi"
    ]


def test_basic_authorization_is_forwarded() -> None:
    assert forwarded(authorization=b"Basic dXNlcjpwYXNz")[b"authorization"] == [
        b"Basic dXNlcjpwYXNz"
    ]


def test_anonymous_basic_authorization_is_not_forwarded() -> None:
    assert b"authorization" not in forwarded(authorization=b"Basic Og==")


def test_client_authorization() -> None:
    assert client(authorization=b"Bearer t").authorization == b"Bearer t"
    assert client(authorization=b"Basic Og==").authorization is None
    assert client().authorization is None


def test_range_and_conditionals_are_forwarded() -> None:
    sent = forwarded(
        range=b"bytes=100-",
        if_none_match=b'"sha256:abc"',
        if_range=b'"e"',
        if_modified_since=b"Mon, 01 Jan 2024 00:00:00 GMT",
    )
    assert sent[b"range"] == [b"bytes=100-"]
    assert sent[b"if-none-match"] == [b'"sha256:abc"']
    assert sent[b"if-range"] == [b'"e"']
    assert sent[b"if-modified-since"] == [b"Mon, 01 Jan 2024 00:00:00 GMT"]


def test_cookies_and_unknown_headers_are_not_forwarded() -> None:
    sent = forwarded(
        cookie=b"session=secret",
        x_forwarded_for=b"10.0.0.1",
        x_custom=b"1",
        proxy_authorization=b"Basic eDp5",
        connection=b"close",
        te=b"trailers",
        host=b"mirror:5000",
        accept_encoding=b"gzip",
        content_length=b"0",
        transfer_encoding=b"chunked",
    )
    assert set(sent) == {b"user-agent"}


def test_only_allowed_headers_are_forwarded() -> None:
    sent = forwarded(
        accept=b"a/b",
        authorization=b"Bearer t",
        range=b"bytes=0-1",
        cookie=b"c=1",
        x_registry_auth=b"secret",
    )
    assert set(sent) == {b"user-agent", b"accept", b"authorization", b"range"}


# --------------------------------------------------------------------------- responses


def test_registry_headers_are_relayed() -> None:
    upstream = headers(
        content_type=b"application/vnd.oci.image.manifest.v1+json",
        docker_content_digest=b"sha256:" + b"a" * 64,
        docker_distribution_api_version=b"registry/2.0",
        etag=b'"sha256:aaa"',
        content_range=b"bytes 0-9/100",
        accept_ranges=b"bytes",
        last_modified=b"Mon, 01 Jan 2024 00:00:00 GMT",
        cache_control=b"max-age=300",
        link=b'</v2/a/tags/list?last=b>; rel="next"',
        oci_subject=b"sha256:" + b"b" * 64,
        warning=b'299 - "deprecated"',
    )
    out = relayed(upstream)
    assert out[b"docker-content-digest"] == [b"sha256:" + b"a" * 64]
    assert out[b"etag"] == [b'"sha256:aaa"']
    assert out[b"content-range"] == [b"bytes 0-9/100"]
    assert len(out) == 11


def test_ratelimit_headers_are_relayed() -> None:
    out = relayed(
        headers(
            ratelimit_limit=b"100;w=21600",
            ratelimit_remaining=b"99;w=21600",
            docker_ratelimit_source=b"1.2.3.4",
        )
    )
    assert out == {b"ratelimit-limit": [b"100;w=21600"], b"ratelimit-remaining": [b"99;w=21600"]}


def test_hop_by_hop_and_length_headers_are_dropped() -> None:
    out = relayed(
        headers(
            connection=b"keep-alive",
            transfer_encoding=b"chunked",
            keep_alive=b"timeout=5",
            content_length=b"1234",
            te=b"trailers",
            trailer=b"x",
            upgrade=b"h2c",
            proxy_authenticate=b"Basic",
        )
    )
    assert out == {}


def test_cookies_and_unknown_headers_are_dropped() -> None:
    out = relayed(
        headers(
            set_cookie=b"session=1",
            server=b"nginx",
            x_amz_request_id=b"1",
            location=b"https://cdn/x",
            www_authenticate=b"Bearer realm=x",
            strict_transport_security=b"max-age=1",
            content_type=b"application/json",
        )
    )
    assert out == {b"content-type": [b"application/json"]}


def test_relayed_names_are_lower_case_with_all_values() -> None:
    upstream = Headers()
    upstream.addRawHeader(b"Warning", b"299 - a")
    upstream.addRawHeader(b"Warning", b"299 - b")
    assert relayed(upstream) == {b"warning": [b"299 - a", b"299 - b"]}
