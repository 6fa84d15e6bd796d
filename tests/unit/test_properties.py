"""Property tests: the parsers of client input never raise anything but their own errors, and
the same inputs sent through the whole Site in memory never make the proxy answer 5xx."""

from __future__ import annotations

import string
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http_headers import Headers

from dockerproxy import errors, names
from dockerproxy.auth import Scope, format_bearer, parse_www_authenticate
from dockerproxy.config import build_config
from dockerproxy.digests import ALGORITHMS, parse
from dockerproxy.edge import read_client_request
from dockerproxy.mirror.responses import parse_range
from tests.unit.proxysite import FakeUpstream, make_parts, parse_response

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# What a client can put in a request line and headers (printable ASCII and latin-1 noise).
TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80)
PATH_PART = st.text(alphabet=string.ascii_letters + string.digits + "._-:/%+=@~", max_size=40)
NAMES = st.from_regex(names.NAME_RE, fullmatch=True)
TAGS = st.from_regex(names.TAG_RE, fullmatch=True)
DIGESTS = st.builds(
    lambda alg, hexa: f"{alg}:{hexa}",
    st.sampled_from(sorted(ALGORITHMS)),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=128),
)


# --------------------------------------------------------------------------- the parsers


@EXAMPLES
@given(st.one_of(PATH_PART.map(lambda p: "/v2/" + p), TEXT))
def test_api_paths_parse_or_give_a_registry_error(path: str) -> None:
    try:
        api = names.parse_api_path(path)
    except errors.RegistryError as e:
        assert 400 <= e.status < 500
        return
    assert names.is_valid_name(api.name)
    assert api.reference is None or names.is_valid_reference(api.reference)


@EXAMPLES
@given(NAMES, TAGS)
def test_names_and_tags_of_the_grammar_route(name: str, tag: str) -> None:
    if len(name) > names.MAX_NAME_LENGTH:
        return
    api = names.parse_api_path(f"/v2/{name}/manifests/{tag}")
    assert (api.name, api.kind, api.reference) == (name, "manifests", tag)


@EXAMPLES
@given(DIGESTS)
def test_a_digest_is_valid_for_names_exactly_when_the_store_keys_it(digest: str) -> None:
    try:
        parsed = parse(digest)
    except ValueError:
        keyed = False
    else:
        keyed = True
        assert str(parsed) == digest
    assert names.is_valid_digest(digest) == keyed


@EXAMPLES
@given(TEXT)
def test_parse_digest_raises_only_value_error(text: str) -> None:
    try:
        digest = parse(text)
    except ValueError:
        return
    assert text == str(digest)


@EXAMPLES
@given(
    st.one_of(
        st.binary(max_size=40),
        st.from_regex(r"bytes=\d{0,25}-\d{0,25}", fullmatch=True).map(str.encode),
    ),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**40)),
)
def test_a_range_is_usable_or_ignored(value: bytes, size: int | None) -> None:
    parsed = parse_range(value, size)
    if parsed is not None:
        first, last = parsed
        assert first >= 0 and (last is None or last >= first)


@EXAMPLES
@given(st.lists(TEXT, max_size=3))
def test_www_authenticate_parses_anything(values: list[str]) -> None:
    for challenge in parse_www_authenticate(values):
        assert challenge.scheme == challenge.scheme.lower()


@EXAMPLES
@given(TEXT, st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT))
def test_a_bearer_challenge_reads_back_as_written(
    realm: str, service: str | None, scope: str | None
) -> None:
    [challenge] = parse_www_authenticate([format_bearer(realm, service, scope)])
    assert challenge.scheme == "bearer" and challenge.realm == realm
    assert challenge.service == service and challenge.params.get("scope") == scope


@EXAMPLES
@given(TEXT)
def test_a_scope_reads_back_as_written(text: str) -> None:
    scope = Scope.parse(text)
    if scope is not None:
        assert str(scope) == text


HEADER_NAMES = st.sampled_from(
    [
        b"authorization",
        b"host",
        b"range",
        b"accept",
        b"if-none-match",
        b"if-range",
        b"accept-language",
        b"x-other",
    ]
)


@EXAMPLES
@given(
    st.lists(st.tuples(HEADER_NAMES, TEXT.map(lambda t: t.encode("latin-1"))), max_size=8),
    st.dictionaries(
        st.sampled_from([b"ns", b"n", b"last", b"scope"]),
        st.lists(TEXT.map(lambda t: t.encode("latin-1")), max_size=3),
    ),
)
def test_the_edge_reads_any_request_or_refuses_it(
    pairs: list[tuple[bytes, bytes]], args: dict[bytes, list[bytes]]
) -> None:
    headers = Headers()
    for name, value in pairs:
        headers.addRawHeader(name, value)
    try:
        client = read_client_request(headers, args)
    except errors.RegistryError as e:
        assert e.status == 400
        return
    assert client.authorization is None or client.authorization.strip() == client.authorization


# --------------------------------------------------------------------------- the whole Site


def answer(
    method: str, target: str, headers: list[tuple[str, str]], cache_dir: str | None
) -> tuple[int, bytes]:
    """Send one request through a fresh Site (caching in C{cache_dir}, or relaying only)
    whose fake upstream answers everything."""
    clock = Clock()
    stub = StubTreq(FakeUpstream())
    settings = {"cache_dir": cache_dir} if cache_dir else {"cache_enabled": False}
    _, _, site = make_parts(build_config({}, settings), clock, stub)
    transport = StringTransport()
    protocol = site.buildProtocol(None)
    protocol.makeConnection(transport)
    head = [
        f"{method} {target} HTTP/1.1",
        "Host: mirror.test",
        *(f"{name}: {value}" for name, value in headers),
    ]
    protocol.dataReceived(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    for _ in range(5):
        stub.flush()
    clock.advance(120)
    raw = transport.value()
    if raw.startswith(b"HTTP/1.1 400 Bad Request\r\n\r\n"):
        return 400, raw  # Twisted's own answer to a request line it cannot parse
    response = parse_response(raw, method)
    return response.status, raw


QUERY = st.lists(
    st.tuples(st.sampled_from(["ns", "n", "last", "scope", "service", "lang"]), PATH_PART),
    max_size=3,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get"]),
    st.sampled_from(
        [
            "/",
            "/v2",
            "/v2/",
            "/v2/auth",
            "/v2/_catalog",
            "/v2/library/alpine/",
            "/v2/x/manifests/",
            "/v2/x/blobs/",
            "/v2/x/tags/list",
        ]
    ),
    PATH_PART,
    QUERY,
    st.lists(
        st.tuples(
            st.sampled_from(
                ["Authorization", "Range", "Accept", "If-None-Match", "Accept-Language", "Host"]
            ),
            TEXT.filter(lambda t: t.strip() == t and t),
        ),
        max_size=4,
    ),
)
def test_no_request_makes_the_proxy_fail(
    tmp_path_factory: pytest.TempPathFactory,
    method: str,
    prefix: str,
    rest: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
) -> None:
    target = prefix + rest + ("?" + urlencode(query) if query else "")
    cache_dir = str(tmp_path_factory.getbasetemp() / "property-cache")
    for cache in (None, cache_dir):
        status, raw = answer(method, target, headers, cache)
        assert b"Traceback" not in raw
        # 5xx only as the fake upstream's own failure, named as the upstream's.
        assert status < 500 or b"upstream" in raw, raw[:400]
