"""Host routing and the upstream repository name; Host routes through the whole Site."""

from __future__ import annotations

import json

import pytest

from dockerproxy import errors
from dockerproxy.config import DOCKER_HUB_URL, UpstreamConfig, build_config
from dockerproxy.routing import Router, Target, upstream_repository
from tests.unit.proxysite import HUB_HOST, ProxyTestCase

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
        },
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


# --------------------------------------------------------------------------- through the whole Site


class HostRoutingTests(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.use(
            build_config(
                {
                    "presets": False,
                    "routes": {
                        "hub.mirror.test": DOCKER_HUB_URL,
                        "ghcr.mirror.test": "https://ghcr.io",
                    },
                },
                {},
            )
        )

    def test_route_by_host(self) -> None:
        self.fetch("GET", "/v2/owner/image/manifests/1", host="ghcr.mirror.test:5000")
        self.fetch("GET", "/v2/busybox/manifests/1", host="ghcr.mirror.test")
        self.fetch("GET", "/v2/busybox/manifests/1", host="hub.mirror.test")
        self.assertEqual(
            [(s.host, s.path) for s in self.upstream.seen],
            [
                ("ghcr.io", "/v2/owner/image/manifests/1"),
                ("ghcr.io", "/v2/busybox/manifests/1"),
                (HUB_HOST, "/v2/library/busybox/manifests/1"),
            ],
        )

    def test_unknown_host_is_a_json_404_listing_routes(self) -> None:
        response = self.fetch("GET", "/v2/busybox/manifests/latest", host="other.test")
        entry = self.assertRegistryError(response, 404, "NAME_UNKNOWN")
        self.assertEqual(
            entry["detail"]["routes"],
            {"ghcr.mirror.test": "https://ghcr.io", "hub.mirror.test": DOCKER_HUB_URL},
        )
        self.assertEqual(self.upstream.seen, [])

    def test_unknown_host_ping_and_token(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/", host="other.test"), 404, "NAME_UNKNOWN")
        self.assertRegistryError(
            self.fetch("GET", "/v2/auth", host="other.test"), 404, "NAME_UNKNOWN"
        )
        self.assertEqual(self.upstream.seen, [])

    def test_missing_host_header(self) -> None:
        self.assertRegistryError(self.fetch("GET", "/v2/", host=None), 404, "NAME_UNKNOWN")

    def test_unknown_host_ping_is_answered_locally_when_registries_exist(self) -> None:
        """Path-prefix pulls work on any Host: the proxy challenges on its own."""
        self.use(build_config({"routes": {"hub.mirror.test": DOCKER_HUB_URL}}, {}))
        response = self.fetch("GET", "/v2/", host="other.test")
        self.assertEqual(response.status, 401)
        self.assertEqual(
            response.header("www-authenticate"),
            'Bearer realm="http://other.test/v2/auth",service="dockerproxy"',
        )
        self.assertEqual(self.upstream.seen, [])
