"""Upstreams over TLS: a self-hosted registry signed by its own CA.

docker-registry serves HTTPS with a certificate from a CA made for the test. The
proxy trusts it only through ``--upstream-ca`` (or a registry's ``ca_file``), refuses
it otherwise with a 502 naming the upstream, and skips the checks for a registry
marked ``insecure = true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import largeblobs, web
from tests.harness.images import Blob
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.registry import Registry, start_registry
from tests.harness.tls import TestCA, make_ca

REPOSITORY = "team/tls"


@pytest.fixture
def tls_registry(tmp: Path) -> Iterator[tuple[Registry, TestCA, Blob]]:
    """A plain (no auth) docker-registry on HTTPS holding one blob of ``team/tls``."""
    ca = make_ca(tmp / "ca")
    registry = start_registry(tmp / "registry", tls=ca)
    try:
        blob = largeblobs.put_large_blob(registry, REPOSITORY, 3_000_000, seed="tls")
        yield registry, ca, blob
    finally:
        registry.stop()


def get_blob(
    proxy: ProxyProcess, repository: str, blob: Blob, digest_body: bool = True
) -> web.Response:
    """GET the blob through the proxy (no auth: the registry needs none)."""
    return web.request(
        "GET", f"{proxy.url}/v2/{repository}/blobs/{blob.digest}", digest_body=digest_body
    )


def test_upstream_ca_trusts_a_self_hosted_registry(
    start_proxy: StartProxy, tls_registry: tuple[Registry, TestCA, Blob]
) -> None:
    registry, ca, blob = tls_registry
    assert registry.url.startswith("https://")
    proxy = start_proxy("--upstream", registry.url, "--upstream-ca", str(ca.ca_cert))
    response = get_blob(proxy, REPOSITORY, blob)
    assert (response.status, response.digest, response.length) == (200, blob.digest, blob.size)
    served = [r for r in registry.responses() if blob.digest in r.path]
    assert [(r.method, r.status) for r in served] == [("GET", 200)], served


def test_untrusted_certificate_is_a_502_naming_the_upstream(
    start_proxy: StartProxy, tls_registry: tuple[Registry, TestCA, Blob]
) -> None:
    registry, _, blob = tls_registry
    proxy = start_proxy("--upstream", registry.url)
    response = get_blob(proxy, REPOSITORY, blob, digest_body=False)
    assert response.status == 502, response
    [error] = response.json()["errors"]
    assert error["code"] == "UNAVAILABLE"
    assert error["detail"] == {"upstream": registry.url}
    assert not [r for r in registry.responses() if blob.digest in r.path]


def test_insecure_registry_skips_certificate_checks(
    start_proxy: StartProxy, tls_registry: tuple[Registry, TestCA, Blob], tmp: Path
) -> None:
    """``insecure = true`` in the config reaches the registry without its CA."""
    registry, _, blob = tls_registry
    config = tmp / "insecure.toml"
    config.write_text(f'[registries."tls.test"]\nurl = "{registry.url}"\ninsecure = true\n')
    proxy = start_proxy("--config", str(config))
    response = get_blob(proxy, f"tls.test/{REPOSITORY}", blob)
    assert (response.status, response.digest, response.length) == (200, blob.digest, blob.size)
