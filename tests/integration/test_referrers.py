"""The OCI 1.1 referrers API through a real dockerproxy, against a registry that has it.

Debian's docker-registry 2.8 does not, so the upstream is the tests' own small registry
(L{tests.harness.ociapi}) with token auth. A client does what oras and cosign do: meets the
proxy's challenge, gets a token from the proxy's /v2/auth, and lists the referrers, all of
them or by artifactType.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from urllib.parse import urlencode

import pytest

from tests.harness.ociapi import (
    INDEX_TYPE,
    REPOSITORY,
    SBOM_TYPE,
    SIGNATURE_TYPE,
    SUBJECT_DIGEST,
    TOKEN,
    FixtureServer,
    referrers_index,
    start_referrers_registry,
)
from tests.harness.proxy import ProxyProcess, StartProxy

PATH = f"/v2/fixture.test/{REPOSITORY}/referrers/{SUBJECT_DIGEST}"


@pytest.fixture
def registry() -> Iterator[FixtureServer]:
    server = start_referrers_registry()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(start_proxy: StartProxy, registry: FixtureServer) -> ProxyProcess:
    return start_proxy("--no-presets", "--registry", f"fixture.test={registry.url}")


def get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, Message, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def proxy_token(proxy: ProxyProcess, challenge: str) -> str:
    """The token a client gets from the realm the challenge names (the proxy's /v2/auth)."""
    params = dict(part.split("=", 1) for part in challenge.removeprefix("Bearer ").split(","))
    params = {k: v.strip('"') for k, v in params.items()}
    assert params["realm"] == f"{proxy.url}/v2/auth", challenge
    assert params["scope"] == f"repository:fixture.test/{REPOSITORY}:pull", challenge
    query = urlencode({"service": params["service"], "scope": params["scope"]})
    status, _, body = get(f"{params['realm']}?{query}")
    assert status == 200, body
    token = json.loads(body)["token"]
    assert isinstance(token, str)
    return token


def test_referrers_are_listed_and_filtered_through_the_proxy(
    proxy: ProxyProcess, registry: FixtureServer
) -> None:
    status, headers, body = get(proxy.url + PATH)
    assert status == 401, body
    token = proxy_token(proxy, headers["WWW-Authenticate"])
    assert token == TOKEN  # the upstream's own token, fetched by the proxy for the client

    status, headers, body = get(proxy.url + PATH, token)
    assert status == 200, body
    assert headers["Content-Type"] == INDEX_TYPE
    assert json.loads(body) == referrers_index()

    for wanted in (SBOM_TYPE, SIGNATURE_TYPE):
        url = f"{proxy.url}{PATH}?{urlencode({'artifactType': wanted})}"
        status, headers, body = get(url, token)
        assert status == 200, body
        assert headers["OCI-Filters-Applied"] == "artifactType"
        assert json.loads(body) == referrers_index(wanted)
        assert len(json.loads(body)["manifests"]) == 1

    status, headers, _ = get(proxy.url + PATH, token, method="HEAD")
    assert (status, headers["Content-Type"]) == (200, INDEX_TYPE)

    upstream = [(s.method, s.path, s.query) for s in registry.seen if s.path != "/token"]
    referrers_path = f"/v2/{REPOSITORY}/referrers/{SUBJECT_DIGEST}"
    assert upstream == [
        ("GET", referrers_path, {}),
        ("GET", referrers_path, {}),
        ("GET", referrers_path, {"artifactType": [SBOM_TYPE]}),
        ("GET", referrers_path, {"artifactType": [SIGNATURE_TYPE]}),
        ("HEAD", referrers_path, {}),
    ]


def test_bad_requests_never_reach_the_registry(
    proxy: ProxyProcess, registry: FixtureServer
) -> None:
    for path, status in (
        (f"/v2/fixture.test/{REPOSITORY}/referrers/latest", 400),
        (f"{PATH}?artifactType=not-a-media-type", 400),
        (f"/v2/other.test/{REPOSITORY}/referrers/{SUBJECT_DIGEST}", 404),
    ):
        got, _, body = get(proxy.url + path)
        assert got == status, body
        assert "errors" in json.loads(body)
    assert registry.seen == []


def test_a_denied_repository_is_refused(start_proxy: StartProxy, registry: FixtureServer) -> None:
    proxy = start_proxy(
        "--no-presets", "--registry", f"fixture.test={registry.url}", "--deny", "fixture.test/**"
    )
    status, _, body = get(proxy.url + PATH, TOKEN)
    assert status == 403, body
    assert registry.seen == []
