"""Who may pull what, and how much, against the real daemon and the real upstream
(docker-registry with token auth, on loopback, the proxy with --no-presets): denied
repositories never reach the registry, client networks, rate limits with Retry-After, and
a real download shaped to --bandwidth-limit, measured with the wall clock."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.harness import images, largeblobs, web
from tests.harness.images import ImageRecord
from tests.harness.polling import wait_until
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.pulls import assert_same_image, copy
from tests.harness.upstream import Upstream

MiB = 1024 * 1024


def denied(response: web.Response) -> bool:
    return response.status == 403 and response.json()["errors"][0]["code"] == "DENIED"


def test_a_denied_repository_gets_403_and_the_registry_sees_no_request(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    proxy = start_proxy(
        "--upstream", upstream.url, "--no-presets", "--deny", f"{upstream.host}/{alpine.name}"
    )
    mark = upstream.log_mark()
    for path in [
        f"/v2/{alpine.name}/manifests/{alpine.tag}",
        f"/v2/{alpine.name}/blobs/{alpine.layer_digests[0]}",
        f"/v2/{alpine.name}/tags/list",
        f"/v2/auth?scope=repository:{alpine.name}:pull",
    ]:
        response = web.request("GET", f"{proxy.url}{path}")
        assert denied(response), response
    assert upstream.requests(since=mark) == []
    assert upstream.token_requests(since=mark) == []
    # A real client is refused (at the token endpoint, its first request naming the
    # repository), and nothing of the repository is asked upstream.
    result = copy(proxy, alpine.ref, tmp / "alpine", check=False)
    assert result.returncode != 0
    assert "403" in result.stderr, result.stderr
    assert upstream.count(pattern=alpine.name, since=mark) == 0
    # Other repositories are served as before.
    multiarch = upstream.images["multiarch"]
    assert copy(proxy, multiarch.ref, tmp / "multiarch").returncode == 0


def test_only_allowed_repositories_are_served(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    proxy = start_proxy(
        "--upstream", upstream.url, "--no-presets", "--allow", f"{upstream.host}/library/*"
    )
    copy(proxy, alpine.ref, tmp / "alpine")
    assert_same_image(tmp / "alpine", alpine)
    mark = upstream.log_mark()
    response = web.request("GET", f"{proxy.url}/v2/public/multiarch/manifests/1")
    assert denied(response), response
    assert upstream.requests(since=mark) == []


def test_clients_outside_allowed_networks_are_refused(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    """The tests' requests come from 127.0.0.1; behind --trusted-proxy, from whom the
    forwarded header names."""
    proxy = start_proxy("--upstream", upstream.url, "--no-presets", "--allow-ip", "10.0.0.0/8")
    mark = upstream.log_mark()
    for path in ["/", "/v2/", "/v2/library/alpine/manifests/3.20"]:
        assert denied(web.request("GET", f"{proxy.url}{path}"))
    assert upstream.requests(since=mark) == []
    behind = start_proxy(
        "--upstream",
        upstream.url,
        "--no-presets",
        "--allow-ip",
        "192.0.2.0/24",
        "--trusted-proxy",
        "127.0.0.1",
    )
    inside = {"X-Forwarded-For": "192.0.2.10"}
    assert web.request("GET", f"{behind.url}/v2/", inside).status == 401  # the upstream's
    outside = {"X-Forwarded-For": "198.51.100.1"}
    assert denied(web.request("GET", f"{behind.url}/v2/", outside))


def test_beyond_the_rate_a_429_with_retry_after(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    """Each test client has an address of its own (forwarded by a trusted proxy, the
    test), so the proxy's readiness polls count for another client."""
    proxy = start_proxy(
        "--upstream",
        upstream.url,
        "--no-presets",
        "--trusted-proxy",
        "127.0.0.1",
        "--rate-limit",
        "1/m",
        "--rate-burst",
        "3",
    )
    client = {"X-Forwarded-For": "192.0.2.20"}
    path = f"{proxy.url}/v2/library/alpine/tags/list"
    statuses = [web.request("GET", path, client).status for _ in range(3)]
    assert all(status != 429 for status in statuses), statuses
    mark = upstream.log_mark()
    response = web.request("GET", path, client)
    assert response.status == 429, response
    assert response.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 50 <= int(response.header("Retry-After") or 0) <= 60
    assert upstream.requests(since=mark) == []
    other = {"X-Forwarded-For": "192.0.2.21"}
    assert web.request("GET", path, other).status != 429


@pytest.fixture(scope="module")
def big_blob(upstream: Upstream) -> tuple[str, images.Blob]:
    """A 12 MiB blob of a public repository of its own: (repository, blob)."""
    name = f"public/shaped-{uuid.uuid4().hex[:8]}"
    return name, largeblobs.put_large_blob(upstream.registry, name, 12 * MiB, seed="shaped")


def timed_download(proxy: ProxyProcess, name: str, blob: images.Blob) -> float:
    token = web.request("GET", f"{proxy.url}/v2/auth?scope=repository:{name}:pull").json()
    started = time.monotonic()
    response = web.request(
        "GET",
        f"{proxy.url}/v2/{name}/blobs/{blob.digest}",
        {"Authorization": f"Bearer {token['token']}"},
        digest_body=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert response.status == 200, response
    assert (response.length, response.digest) == (blob.size, blob.digest)
    return elapsed


@pytest.mark.parametrize("mode", ["relayed", "cache fill, then hit"])
def test_a_real_download_arrives_at_the_bandwidth_limit(
    start_proxy: StartProxy, upstream: Upstream, big_blob: tuple[str, images.Blob], mode: str
) -> None:
    """A 12 MiB blob at 4 MiB/s: after the first 0.8 MiB (the bucket's 0.2 s of burst),
    the rest at the limit, within 30%: relayed, followed while the cache fills, and from
    the cache with sendfile()."""
    rate = 4 * MiB
    name, blob = big_blob
    cache = ["--no-cache"] if mode == "relayed" else []
    proxy = start_proxy(
        "--upstream",
        upstream.url,
        "--no-presets",
        "--bandwidth-limit",
        "4MiB/s",
        "--log-format",
        "json",
        *cache,
    )
    for _ in range(1 if mode == "relayed" else 2):
        elapsed = timed_download(proxy, name, blob)
        measured = (blob.size - 0.2 * rate) / elapsed
        assert 0.7 * rate <= measured <= 1.3 * rate, f"{measured / MiB:.2f} MiB/s"

    def served() -> list[object]:
        return [e["cache"] for e in proxy.access_events() if "/blobs/" in str(e["path"])]

    # A request's log line is written once its response has ended: it may follow the bytes.
    expected = ["-"] if mode == "relayed" else ["miss", "hit"]
    assert wait_until(lambda: served() == expected), served()
