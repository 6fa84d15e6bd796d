"""WWW-Authenticate parsing, Bearer challenges, token scopes and anonymous credentials."""

from __future__ import annotations

import pytest

from dockerproxy.auth import (
    Challenge,
    Scope,
    format_bearer,
    is_anonymous,
    parse_www_authenticate,
    rewrite_scopes,
    split_scopes,
)
from dockerproxy.config import DOCKER_HUB_URL, UpstreamConfig
from dockerproxy.routing import upstream_repository

HUB_CHALLENGE = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'


def parse(*values: str) -> list[Challenge]:
    return parse_www_authenticate(list(values))


def only(*values: str) -> Challenge:
    challenges = parse(*values)
    assert len(challenges) == 1, challenges
    return challenges[0]


# --------------------------------------------------------------------------- parse_www_authenticate


def test_docker_hub_challenge() -> None:
    challenge = only(HUB_CHALLENGE)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
    }


def test_docker_hub_challenge_with_scope() -> None:
    challenge = only(HUB_CHALLENGE + ',scope="repository:library/alpine:pull"')
    assert challenge.params["scope"] == "repository:library/alpine:pull"


def test_scope_is_optional() -> None:
    assert "scope" not in only(HUB_CHALLENGE).params


@pytest.mark.parametrize(
    "value",
    [
        'Bearer service="svc",scope="repository:a:pull",realm="https://r/t"',
        'Bearer scope="repository:a:pull", realm="https://r/t", service="svc"',
        'Bearer   realm = "https://r/t" ,  service="svc" , scope="repository:a:pull"',
    ],
)
def test_any_parameter_order_and_spacing(value: str) -> None:
    challenge = only(value)
    assert challenge.params == {
        "realm": "https://r/t",
        "service": "svc",
        "scope": "repository:a:pull",
    }


def test_scheme_and_parameter_names_are_case_insensitive() -> None:
    challenge = only('BEARER Realm="https://r/t",SERVICE="Svc"')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://r/t", "service": "Svc"}


def test_unquoted_parameter_values() -> None:
    assert only("Bearer service=registry.example,error=invalid_token").params == {
        "service": "registry.example",
        "error": "invalid_token",
    }


def test_quoted_string_with_escaped_quotes() -> None:
    challenge = only(r'Bearer realm="say \"hi\" \\ bye",service="s"')
    assert challenge.realm == 'say "hi" \\ bye'
    assert challenge.service == "s"


def test_commas_inside_quotes_do_not_split() -> None:
    challenge = only('Bearer realm="https://r/t?a=1,b=2",scope="repository:a:pull,push"')
    assert challenge.realm == "https://r/t?a=1,b=2"
    assert challenge.params["scope"] == "repository:a:pull,push"


def test_basic_challenge() -> None:
    assert only('Basic realm="Registry Realm"') == Challenge("basic", {"realm": "Registry Realm"})


def test_basic_challenge_with_charset() -> None:
    challenge = only('Basic realm="r", charset="UTF-8"')
    assert challenge.params == {"realm": "r", "charset": "UTF-8"}


def test_several_challenges_in_one_header() -> None:
    challenges = parse('Basic realm="simple", ' + HUB_CHALLENGE + ", Negotiate")
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate"]
    assert challenges[0].realm == "simple"
    assert challenges[1].service == "registry.docker.io"


def test_rfc7235_example_with_escaped_title() -> None:
    challenges = parse(
        r'Newauth realm="apps", type=1, title="Login to \"apps\"", '
        'Basic realm="simple"'
    )
    assert challenges == [
        Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        Challenge("basic", {"realm": "simple"}),
    ]


def test_challenges_in_several_headers() -> None:
    challenges = parse('Basic realm="a"', HUB_CHALLENGE)
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[1].realm == "https://auth.docker.io/token"


def test_token68() -> None:
    assert only("Negotiate YIIB9wYJKoZIhvcSAQICAQBuggHmMIIB4qADAgEFoQMCAQ6iBwMFACAAAAA=") == (
        Challenge("negotiate", {})
    )


def test_token68_followed_by_another_challenge() -> None:
    challenges = parse('Negotiate abc123==, Bearer realm="https://r/t"')
    assert [c.scheme for c in challenges] == ["negotiate", "bearer"]
    assert challenges[1].realm == "https://r/t"


def test_scheme_without_parameters() -> None:
    assert only("Bearer") == Challenge("bearer", {})


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        ",,,",
        "=====",
        '"unterminated',
        'Bearer realm="unterminated',
        "Bearer realm=",
        'Bearer realm="a",,,,',
        "\x00\xff\u2603",
        'Bearer realm="\\',
        '=realm="x"',
        "Bearer " + "," * 10000,
        'Bearer realm="' + "\\" * 999,
    ],
)
def test_garbage_does_not_raise(value: str) -> None:
    challenges = parse(value)
    assert isinstance(challenges, list)
    assert all(isinstance(c, Challenge) for c in challenges)


def test_garbage_after_a_good_challenge_keeps_it() -> None:
    challenges = parse(HUB_CHALLENGE + ', "trailing garbage')
    assert challenges[0] == only(HUB_CHALLENGE)


def test_unterminated_realm_is_not_invented() -> None:
    challenges = parse('Bearer realm="https://r/t')
    assert challenges[0].scheme == "bearer"
    assert challenges[0].realm is None


# --------------------------------------------------------------------------- format_bearer


def test_format_bearer_orders_parameters() -> None:
    assert format_bearer(
        "http://mirror:5000/v2/auth", "registry.docker.io", "repository:busybox:pull"
    ) == (
        'Bearer realm="http://mirror:5000/v2/auth",service="registry.docker.io",'
        'scope="repository:busybox:pull"'
    )


def test_format_bearer_omits_missing_parameters() -> None:
    assert format_bearer("http://m/v2/auth", None) == 'Bearer realm="http://m/v2/auth"'


@pytest.mark.parametrize(
    ("realm", "service", "scope", "error"),
    [
        ("http://m:5000/v2/auth", "registry.docker.io", None, None),
        ("http://m/v2/auth", "svc", "repository:a/b:pull", "insufficient_scope"),
        ('http://m/v2/auth?x="y"', 'we "quote", too', "repository:a:pull,push", None),
        ("http://m/v2/auth", "back\\slash\\", "registry:catalog:*", "invalid_token"),
        ("http://[::1]:5000/v2/auth", None, "repository:localhost:5000/a:pull", None),
    ],
)
def test_format_bearer_round_trips(
    realm: str, service: str | None, scope: str | None, error: str | None
) -> None:
    challenge = only(format_bearer(realm, service, scope, error))
    expected = {"realm": realm}
    for name, value in (("service", service), ("scope", scope), ("error", error)):
        if value is not None:
            expected[name] = value
    assert challenge == Challenge("bearer", expected)


# --------------------------------------------------------------------------- scopes


def test_scope_parse() -> None:
    assert Scope.parse("repository:library/alpine:pull") == Scope(
        "repository", "library/alpine", "pull"
    )


def test_scope_parse_name_with_port() -> None:
    scope = Scope.parse("repository:localhost:5000/foo/bar:pull,push")
    assert scope == Scope("repository", "localhost:5000/foo/bar", "pull,push")
    assert str(scope) == "repository:localhost:5000/foo/bar:pull,push"


def test_scope_parse_resource_class() -> None:
    assert Scope.parse("repository(plugin):a/b:pull") == Scope("repository(plugin)", "a/b", "pull")


@pytest.mark.parametrize(
    "text", ["", "repository", "repository:alpine", ":a:pull", "repository::pull"]
)
def test_scope_parse_rejects_malformed(text: str) -> None:
    assert Scope.parse(text) is None


def test_scope_str_round_trips() -> None:
    text = "registry:catalog:*"
    assert str(Scope.parse(text)) == text


def test_split_scopes_space_separated() -> None:
    assert split_scopes(["repository:a:pull repository:b:pull", "registry:catalog:*"]) == [
        "repository:a:pull",
        "repository:b:pull",
        "registry:catalog:*",
    ]


def test_split_scopes_ignores_extra_whitespace() -> None:
    assert split_scopes(["  repository:a:pull   ", "", " "]) == ["repository:a:pull"]


def hub_names(name: str) -> str:
    hub = UpstreamConfig("registry-1.docker.io", DOCKER_HUB_URL, library_prefix=True)
    return upstream_repository(hub, name)


def test_rewrite_scopes_completes_library_names() -> None:
    assert rewrite_scopes(["repository:busybox:pull"], hub_names) == [
        "repository:library/busybox:pull"
    ]


def test_rewrite_scopes_keeps_multi_component_names() -> None:
    assert rewrite_scopes(["repository:bitnami/redis:pull"], hub_names) == [
        "repository:bitnami/redis:pull"
    ]


def test_rewrite_scopes_keeps_non_repository_scopes() -> None:
    scopes = ["registry:catalog:*", "garbage", "repository:"]
    assert rewrite_scopes(scopes, hub_names) == scopes


def test_rewrite_scopes_handles_resource_class() -> None:
    assert rewrite_scopes(["repository(plugin):busybox:pull"], hub_names) == [
        "repository(plugin):library/busybox:pull"
    ]


def test_rewrite_scopes_without_library_prefix() -> None:
    other = UpstreamConfig("ghcr.io", "https://ghcr.io", library_prefix=False)
    assert rewrite_scopes(
        ["repository:busybox:pull"], lambda name: upstream_repository(other, name)
    ) == ["repository:busybox:pull"]


def test_rewrite_scopes_keeps_order_and_count() -> None:
    assert rewrite_scopes(
        ["repository:a:pull", "registry:catalog:*", "repository:b/c:pull"], hub_names
    ) == ["repository:library/a:pull", "registry:catalog:*", "repository:b/c:pull"]


# --------------------------------------------------------------------------- is_anonymous


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        b"",
        b"Basic Og==",
        b"basic Og==",
        b"BASIC Og==",
        b"  Basic   Og==  ",
        b"Basic",
        b"Basic ",
    ],
)
def test_anonymous(authorization: bytes | None) -> None:
    assert is_anonymous(authorization)


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer Og==", b"Bearer eyJhbGciOi.x.y", b"Basic dXNlcjpwYXNz", b"Basic OmE=", b"Basic og=="],
)
def test_not_anonymous(authorization: bytes) -> None:
    assert not is_anonymous(authorization)
