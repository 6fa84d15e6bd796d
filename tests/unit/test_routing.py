"""Host routing and the upstream repository name."""

from __future__ import annotations

import json

import pytest

from dockerproxy import errors
from dockerproxy.config import DOCKER_HUB_URL, UpstreamConfig, build_config
from dockerproxy.routing import Router, Target, upstream_repository

HUB = UpstreamConfig("registry-1.docker.io", DOCKER_HUB_URL, library_prefix=True)
GHCR = UpstreamConfig("ghcr.mirror.test", "https://ghcr.io", library_prefix=False)
QUAY = UpstreamConfig("quay.mirror.test:5000", "https://quay.io", library_prefix=False)
LOCAL = UpstreamConfig("local", "http://127.0.0.1:5001", library_prefix=True)

ROUTES = {"ghcr.mirror.test": GHCR, "quay.mirror.test:5000": QUAY, "hub.mirror.test": HUB}


def router(default: UpstreamConfig | None = HUB) -> Router:
    return Router(default, ROUTES)


def lookup_error(r: Router, host: str | None) -> errors.RegistryError:
    with pytest.raises(errors.RegistryError) as caught:
        r.upstream_for(host)
    return caught.value


def test_exact_host() -> None:
    assert router().upstream_for("ghcr.mirror.test") is GHCR


def test_exact_host_with_port() -> None:
    assert router().upstream_for("quay.mirror.test:5000") is QUAY


def test_host_is_case_and_space_insensitive() -> None:
    assert router().upstream_for("  GHCR.Mirror.Test ") is GHCR


def test_port_falls_back_to_the_bare_host() -> None:
    assert router().upstream_for("ghcr.mirror.test:5000") is GHCR


def test_route_with_port_needs_that_port() -> None:
    assert router().upstream_for("quay.mirror.test:6000") is HUB
    assert router().upstream_for("quay.mirror.test") is HUB


def test_unknown_host_uses_the_default() -> None:
    assert router().upstream_for("elsewhere.test:5000") is HUB


@pytest.mark.parametrize("host", [None, ""])
def test_missing_host_uses_the_default(host: str | None) -> None:
    assert router().upstream_for(host) is HUB


def test_ipv6_host_with_port_falls_back() -> None:
    v6 = UpstreamConfig("v6", "http://[::1]:5001", library_prefix=False)
    r = Router(None, {"[::1]": v6})
    assert r.upstream_for("[::1]:5000") is v6
    assert r.upstream_for("[::1]") is v6


def test_unknown_host_without_default_is_name_unknown() -> None:
    error = lookup_error(router(default=None), "elsewhere.test:5000")
    assert (error.status, error.code) == (404, "NAME_UNKNOWN")
    assert "elsewhere.test:5000" in error.message


def test_unknown_host_error_lists_the_routes() -> None:
    error = lookup_error(router(default=None), "elsewhere.test")
    assert error.detail == {
        "registries": [],
        "routes": {
            "ghcr.mirror.test": "https://ghcr.io",
            "hub.mirror.test": DOCKER_HUB_URL,
            "quay.mirror.test:5000": "https://quay.io",
        }
    }
    entry = json.loads(error.body())["errors"][0]
    assert entry["code"] == "NAME_UNKNOWN"
    assert entry["detail"]["routes"]["ghcr.mirror.test"] == "https://ghcr.io"


def test_missing_host_without_default_is_name_unknown() -> None:
    error = lookup_error(router(default=None), None)
    assert error.status == 404
    assert "(none)" in error.message


def test_resolve_adds_library_for_one_component_names() -> None:
    assert router().resolve("mirror:5000", "busybox") == Target(HUB, "library/busybox")


def test_resolve_keeps_multi_component_names() -> None:
    assert router().resolve("mirror:5000", "bitnami/redis") == Target(HUB, "bitnami/redis")
    assert router().resolve("mirror:5000", "library/redis") == Target(HUB, "library/redis")


def test_resolve_without_library_prefix() -> None:
    assert router().resolve("ghcr.mirror.test", "busybox") == Target(GHCR, "busybox")


def test_resolve_uses_the_routed_upstreams_prefix() -> None:
    assert router(default=GHCR).resolve("hub.mirror.test", "alpine") == Target(
        HUB, "library/alpine"
    )


@pytest.mark.parametrize(
    ("upstream", "name", "expected"),
    [
        (HUB, "busybox", "library/busybox"),
        (HUB, "library/busybox", "library/busybox"),
        (HUB, "a/b/c", "a/b/c"),
        (GHCR, "busybox", "busybox"),
        (LOCAL, "plain", "library/plain"),
    ],
)
def test_upstream_repository(upstream: UpstreamConfig, name: str, expected: str) -> None:
    assert upstream_repository(upstream, name) == expected


def test_from_config() -> None:
    config = build_config(
        {"routes": {"ghcr.mirror.test": "https://ghcr.io"}}, {"upstream": DOCKER_HUB_URL}
    )
    r = Router.from_config(config)
    assert r.upstream_for("ghcr.mirror.test").url == "https://ghcr.io"
    assert r.upstream_for("other").url == DOCKER_HUB_URL
    assert r.resolve("other", "busybox").repository == "library/busybox"
    assert r.resolve("ghcr.mirror.test", "busybox").repository == "busybox"
