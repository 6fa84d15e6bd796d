"""Host, path-prefix and ns routing at once on one listener, over two real upstreams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import rawserver, web
from tests.harness.images import ImageRecord
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.rawserver import RawServer
from tests.harness.skopeo import oci_digests, skopeo
from tests.harness.upstream import Upstream


@pytest.fixture
def two_registry_proxy(
    start_proxy: StartProxy, upstream: Upstream, plain_upstream: Upstream
) -> ProxyProcess:
    """docker.io is the token-auth upstream, quay.io the plain one; localhost routes to quay.io."""
    from tests.harness.ports import free_port

    port = free_port()
    return start_proxy(
        "--no-presets",
        "--registry",
        f"docker.io={upstream.url}",
        "--registry",
        f"quay.io={plain_upstream.url}",
        "--route",
        f"localhost:{port}=quay.io",
        port=port,
    )


def pull(ref: str, dest: Path) -> None:
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:x")


def assert_pulled(dest: Path, image: ImageRecord) -> None:
    layout = oci_digests(dest, verify=True)
    assert layout.manifest_digests == [image.manifest_digest]
    assert set(image.blobs) <= set(layout.blobs)


def test_path_prefix_mode(
    two_registry_proxy: ProxyProcess, upstream: Upstream, plain_upstream: Upstream, tmp: Path
) -> None:
    host = two_registry_proxy.host
    pull(f"{host}/docker.io/alpine:3.20", tmp / "hub-short")
    assert_pulled(tmp / "hub-short", upstream.images["alpine"])
    pull(f"{host}/docker.io/library/alpine:3.20", tmp / "hub")
    assert_pulled(tmp / "hub", upstream.images["alpine"])
    pull(f"{host}/quay.io/library/plain:1", tmp / "quay")
    assert_pulled(tmp / "quay", plain_upstream.images["plain"])


def test_host_mode_and_default(
    two_registry_proxy: ProxyProcess, upstream: Upstream, plain_upstream: Upstream, tmp: Path
) -> None:
    pull(f"localhost:{two_registry_proxy.port}/library/plain:1", tmp / "routed")
    assert_pulled(tmp / "routed", plain_upstream.images["plain"])
    pull(f"{two_registry_proxy.host}/alpine:3.20", tmp / "default")
    assert_pulled(tmp / "default", upstream.images["alpine"])


def test_ns_mode_with_token_auth(
    two_registry_proxy: ProxyProcess, upstream: Upstream, plain_upstream: Upstream
) -> None:
    """containerd's requests: ?ns= on every call, HEAD first, the realm keeps ns."""
    base = two_registry_proxy.url
    alpine = upstream.images["alpine"]
    accept = [("Accept", alpine.media_type)]
    head = web.request("HEAD", f"{base}/v2/library/alpine/manifests/3.20?ns=docker.io", accept)
    assert head.status == 401
    challenge = head.header("www-authenticate") or ""
    assert f'realm="{base}/v2/auth?ns=docker.io"' in challenge
    token = web.request(
        "GET",
        f"{base}/v2/auth?ns=docker.io&scope=repository:library/alpine:pull"
        f"&service={upstream.service}",
    ).json()["token"]
    auth = [("Authorization", f"Bearer {token}"), *accept]
    ok = web.request("HEAD", f"{base}/v2/library/alpine/manifests/3.20?ns=docker.io", auth)
    assert ok.status == 200 and ok.header("docker-content-digest") == alpine.manifest_digest
    plain = plain_upstream.images["plain"]
    other = web.request(
        "GET", f"{base}/v2/library/plain/manifests/1?ns=quay.io", [("Accept", plain.media_type)]
    )
    assert other.status == 200 and other.header("docker-content-digest") == plain.manifest_digest


@pytest.fixture
def sentinel() -> Iterator[RawServer]:
    """A listener that records every connection: an open proxy would contact it."""
    with rawserver.sentinel() as listener:
        yield listener


def test_unconfigured_registries_are_never_contacted(
    two_registry_proxy: ProxyProcess, upstream: Upstream, sentinel: RawServer
) -> None:
    base = two_registry_proxy.url
    target = sentinel.address
    mark = upstream.log_mark()
    for path in (
        f"/v2/library/alpine/manifests/3.20?ns={target}",
        "/v2/library/alpine/manifests/3.20?ns=ghcr.io",
        f"/v2/auth?ns={target}&scope=repository:library/alpine:pull",
        "/v2/ghcr.io/owner/image/manifests/1",
        "/v2/auth?scope=repository:ghcr.io/owner/image:pull",
        f"/v2/?ns={target}",
    ):
        response = web.request("GET", base + path)
        assert response.status == 404, (path, response)
        error = response.json()["errors"][0]
        assert error["code"] == "NAME_UNKNOWN" and "not configured" in error["message"]
    # A Host naming the sentinel goes to the default upstream, not to that host.
    web.request("GET", f"{base}/v2/", {"Host": target})
    assert sentinel.peers == []
    assert all("ghcr" not in path for _, path in upstream.requests(mark))
