"""Attempts to make cached private content readable by clients the upstream would refuse.

Each test first shows the attack's request, then what an anonymous client (skopeo with no
credentials, and a plain GET by digest) gets afterwards: the private image must stay private,
in the cache as upstream, and across a restart of the proxy.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import web
from tests.harness.images import ImageRecord
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.pulls import assert_same_image, copy
from tests.harness.upstream import Upstream


def caching_proxy(start_proxy: StartProxy, upstream: Upstream, cache: Path) -> ProxyProcess:
    return start_proxy("--upstream", upstream.url, "--no-presets", "--cache-dir", str(cache))


def reader_token(upstream: Upstream, secret: ImageRecord) -> str:
    assert upstream.tokenserver is not None and upstream.reader is not None
    return upstream.tokenserver.fetch_token([f"repository:{secret.name}:pull"], upstream.reader)


def assert_still_private(proxy: ProxyProcess, secret: ImageRecord, tmp: Path) -> None:
    """Anonymous clients and made-up credentials get nothing of the private image."""
    anonymous = copy(proxy, secret.ref, tmp / "anonymous", check=False)
    assert anonymous.returncode != 0, "an anonymous client pulled a private image"
    assert re.search(r"unauthorized|denied", anonymous.stderr, re.I), anonymous.stderr
    assert not (tmp / "anonymous" / "index.json").exists()
    paths = [
        f"/v2/{secret.name}/manifests/{secret.manifest_digest}",
        *(f"/v2/{secret.name}/blobs/{digest}" for digest in secret.blobs),
    ]
    for path in paths:
        for headers in ({}, {"Authorization": "Basic Og=="}, {"Authorization": "Bearer made-up"}):
            response = web.request("GET", proxy.url + path, headers)
            assert response.status == 401, (path, headers, str(response))


@pytest.mark.parametrize("second", ["Basic Og==", "Bearer made-up"])
def test_two_authorization_headers_are_refused_and_nothing_is_recorded(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path, second: str
) -> None:
    """A valid token first and anything second: the upstream would see the first and the
    access records the second, so one request could mark a private repository public."""
    secret = upstream.images["secret"]
    assert isinstance(secret, ImageRecord)
    proxy = caching_proxy(start_proxy, upstream, tmp / "cache")
    token = reader_token(upstream, secret)
    mark = upstream.log_mark()
    paths = [
        f"/v2/{secret.name}/manifests/{secret.tag}",
        f"/v2/{secret.name}/manifests/{secret.manifest_digest}",
        *(f"/v2/{secret.name}/blobs/{digest}" for digest in secret.blobs),
    ]
    for path in paths:
        response = web.request(
            "GET",
            proxy.url + path,
            [
                ("Accept", secret.media_type),
                ("Authorization", f"Bearer {token}"),
                ("Authorization", second),
            ],
        )
        assert response.status == 400, str(response)
        assert response.json()["errors"][0]["code"] == "INVALID_REQUEST"
    assert upstream.requests(since=mark) == [], "refused before anything was fetched"

    assert_still_private(proxy, secret, tmp)
    proxy.stop()
    assert_still_private(caching_proxy(start_proxy, upstream, tmp / "cache"), secret, tmp)


def test_authorized_pull_then_duplicate_credentials_cannot_read_the_cache(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    """With the image cached by an authorized pull, a second, conflicting credential in the
    same request is refused too; a token for one repository never opens another."""
    secret = upstream.images["secret"]
    assert isinstance(secret, ImageRecord) and upstream.reader is not None
    user, password = upstream.reader
    proxy = caching_proxy(start_proxy, upstream, tmp / "cache")
    copy(proxy, secret.ref, tmp / "authorized", f"--src-creds={user}:{password}")
    assert_same_image(tmp / "authorized", secret)

    token = reader_token(upstream, secret)
    layer = f"/v2/{secret.name}/blobs/{secret.layers[0].digest}"
    for pair in (
        [("Authorization", "Basic Og=="), ("Authorization", f"Bearer {token}")],
        [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
    ):
        response = web.request("GET", proxy.url + layer, pair)
        assert response.status == 400, str(response)
    assert upstream.tokenserver is not None
    other = upstream.tokenserver.fetch_token(["repository:library/alpine:pull"])
    response = web.request("GET", proxy.url + layer, {"Authorization": f"Bearer {other}"})
    assert response.status == 401, str(response)
    assert_still_private(proxy, secret, tmp)


def test_two_host_headers_are_refused(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = caching_proxy(start_proxy, upstream, tmp / "cache")
    mark = upstream.log_mark()
    response = web.request("GET", f"{proxy.url}/v2/", [("Host", "a.test"), ("Host", proxy.host)])
    assert response.status == 400, str(response)
    assert response.json()["errors"][0]["code"] == "INVALID_REQUEST"
    assert upstream.requests(since=mark) == []
