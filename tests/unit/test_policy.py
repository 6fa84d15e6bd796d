"""Who may pull what, and how much (L{dockerproxy.policy}), over the whole Site with raw
HTTP bytes: client networks, repository allow and deny lists (refused before any
upstream request: the fake upstream sees nothing), request rates, blob downloads at once,
per-user quotas, bandwidth, and settings replaced as a reload does."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from dockerproxy.config import Config, build_config
from dockerproxy.shaping import capacity_for
from dockerproxy.site import ProxyRequest
from tests.unit.mirror.mirrorsite import MirrorTestCase
from tests.unit.proxysite import (
    DIGEST,
    HUB_HOST,
    MANIFEST,
    MIRROR,
    ProxyTestCase,
    Response,
    ScriptedHTTP,
    parse_response,
    reply,
)

OUTSIDE = "203.0.113.9"
INSIDE = "192.0.2.7"
PROXY = "127.0.0.1"
MANIFEST_PATH = "/v2/library/busybox/manifests/latest"
BLOB_PATH = f"/v2/library/busybox/blobs/{DIGEST}"


class PolicySite:
    """A proxy Site configured as servicetree.service_for does (access settings and quotas), whose
    requests are kept (C{made}) and may carry the user the auth code would have set."""

    site: Any
    made: list[ProxyRequest]
    user: str | None = None

    def configure(self, config: Config) -> None:
        """What a reload does with the settings (ProxySite.apply)."""
        self.site.apply(config)

    def keep_requests(self) -> None:
        self.made = []

        def factory(*args: Any, **kwargs: Any) -> ProxyRequest:
            request = ProxyRequest(*args, **kwargs)
            request.user = self.user
            self.made.append(request)
            return request

        self.site.requestFactory = factory

    def connect(self, address: str) -> tuple[Any, StringTransport]:
        transport = StringTransport(peerAddress=IPv4Address("TCP", address, 40000))
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        return protocol, transport

    def send_from(
        self, address: str, method: str, path: str, headers: list[tuple[str, str]] | None = None
    ) -> StringTransport:
        protocol, transport = self.connect(address)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {MIRROR}"]
        lines += [f"{name}: {value}" for name, value in headers or []]
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.pump()  # type: ignore[attr-defined]
        return transport

    def fetch_from(
        self, address: str, method: str, path: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        return parse_response(self.send_from(address, method, path, headers).value(), method)


class PolicyTestCase(PolicySite, ProxyTestCase):
    def use(self, config: Config, http: Any = None) -> None:
        super().use(config, http)
        self.configure(config)
        self.keep_requests()

    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(
            HUB_HOST,
            MANIFEST_PATH,
            reply(200, MANIFEST, content_type="application/vnd.oci.image.index.v1+json"),
        )
        self.upstream.on(HUB_HOST, BLOB_PATH, reply(200, b"blob", docker_content_digest=DIGEST))

    def settings(self, toml: dict[str, Any], cli: dict[str, Any] | None = None) -> None:
        self.use(build_config(toml, cli or {}))


class AllowIpTests(PolicyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.settings({"access": {"allow_ip": ["192.0.2.0/24", "2001:db8::/32"]}})

    def test_a_client_outside_the_networks_is_refused_everywhere(self) -> None:
        for method, path in [
            ("GET", "/"),
            ("GET", "/v2/"),
            ("GET", "/v2/auth?scope=repository:busybox:pull"),
            ("GET", "/v2/busybox/manifests/latest"),
            ("HEAD", f"/v2/busybox/blobs/{DIGEST}"),
            ("GET", "/nowhere"),
            ("PUT", "/v2/busybox/manifests/latest"),
        ]:
            response = self.fetch_from(OUTSIDE, method, path)
            self.assertEqual(response.status, 403, path)
            if method == "GET":
                self.assertRegistryError(response, 403, "DENIED")
        self.assertEqual(self.upstream.seen, [])
        self.assertEqual({r.refusal for r in self.made}, {"ip"})
        self.assertEqual([e["client"] for e in self.access], [OUTSIDE] * 7)

    def test_a_client_inside_is_served(self) -> None:
        response = self.fetch_from(INSIDE, "GET", "/v2/busybox/manifests/latest")
        self.assertEqual((response.status, response.body), (200, MANIFEST))
        self.assertIsNone(self.made[0].refusal)

    def test_a_request_the_edge_cannot_read_is_refused_for_its_network_first(self) -> None:
        headers = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
        response = self.fetch_from(OUTSIDE, "GET", "/v2/", headers)
        self.assertRegistryError(response, 403, "DENIED")
        response = self.fetch_from(INSIDE, "GET", "/v2/", headers)
        self.assertRegistryError(response, 400, "INVALID_REQUEST")

    def test_behind_a_trusted_proxy_the_forwarded_client_counts(self) -> None:
        self.settings(
            {"access": {"allow_ip": ["192.0.2.0/24"], "trusted_proxies": ["127.0.0.0/8"]}}
        )
        forwarded = [("X-Forwarded-For", INSIDE)]
        response = self.fetch_from(PROXY, "GET", "/v2/busybox/manifests/latest", forwarded)
        self.assertEqual(response.status, 200)
        response = self.fetch_from(PROXY, "GET", "/v2/", [("X-Forwarded-For", OUTSIDE)])
        self.assertRegistryError(response, 403, "DENIED")
        response = self.fetch_from(PROXY, "GET", "/v2/", [("Forwarded", f"for={OUTSIDE}")])
        self.assertRegistryError(response, 403, "DENIED")

    def test_without_trusted_proxies_forwarded_headers_count_for_nothing(self) -> None:
        response = self.fetch_from(OUTSIDE, "GET", "/v2/", [("X-Forwarded-For", INSIDE)])
        self.assertRegistryError(response, 403, "DENIED")
        self.assertEqual(self.upstream.seen, [])

    def test_ipv6_and_ipv4_mapped_clients(self) -> None:
        self.assertEqual(self.fetch_from("2001:db8::5", "GET", "/").status, 200)
        self.assertEqual(self.fetch_from("::ffff:192.0.2.8", "GET", "/").status, 200)
        self.assertEqual(self.fetch_from("::ffff:203.0.113.9", "GET", "/").status, 403)

    def test_new_settings_count_for_the_next_request(self) -> None:
        self.assertEqual(self.fetch_from(OUTSIDE, "GET", "/").status, 403)
        self.configure(build_config({}, {}))
        self.assertEqual(self.fetch_from(OUTSIDE, "GET", "/").status, 200)


class RepositoryTests(PolicyTestCase):
    def deny(self, path: str, headers: list[tuple[str, str]] | None = None) -> None:
        response = self.fetch("GET", path, headers)
        entry = self.assertRegistryError(response, 403, "DENIED")
        self.assertEqual(self.made[-1].refusal, "repository")
        self.assertEqual(self.upstream.seen, [], "the upstream was asked")
        self.assertIn("detail", entry)

    def test_a_denied_repository_is_refused_before_any_upstream_request(self) -> None:
        self.settings({"access": {"deny": ["docker.io/library/busybox"]}})
        self.deny("/v2/busybox/manifests/latest")
        self.deny("/v2/library/busybox/manifests/latest")
        self.deny(f"/v2/busybox/blobs/{DIGEST}")
        self.deny("/v2/busybox/tags/list")
        self.deny("/v2/docker.io/library/busybox/manifests/latest")
        self.assertEqual(self.fetch("GET", "/v2/library/alpine/manifests/latest").status, 404)

    def test_only_allowed_repositories_are_served(self) -> None:
        self.settings({"access": {"allow": ["docker.io/library/*"]}})
        self.deny("/v2/someone/busybox/manifests/latest")
        self.deny("/v2/library/busybox/sub/manifests/latest")
        response = self.fetch("GET", "/v2/busybox/manifests/latest")
        self.assertEqual((response.status, response.body), (200, MANIFEST))

    def test_deny_wins(self) -> None:
        self.settings({"access": {"allow": ["docker.io/**"], "deny": ["docker.io/library/busy*"]}})
        self.deny("/v2/busybox/manifests/latest")

    def test_the_token_endpoint_refuses_a_denied_scope(self) -> None:
        self.settings({"access": {"deny": ["docker.io/library/busybox"]}})
        self.deny("/v2/auth?scope=repository:alpine:pull&scope=repository:busybox:pull")
        response = self.fetch("GET", "/v2/auth?scope=repository:alpine:pull")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.upstream.seen[-1].query["scope"], ["repository:library/alpine:pull"])

    def test_patterns_name_the_registry_of_any_route(self) -> None:
        self.settings(
            {"registries": {"ghcr.io": "https://ghcr.test"}, "access": {"deny": ["ghcr.io/**"]}}
        )
        self.deny("/v2/ghcr.io/owner/image/manifests/latest")
        self.deny("/v2/owner/image/manifests/latest?ns=ghcr.io")

    def test_new_deny_lists_count_for_the_next_request(self) -> None:
        self.assertEqual(self.fetch("GET", "/v2/busybox/manifests/latest").status, 200)
        self.upstream.seen.clear()
        self.configure(build_config({"access": {"deny": ["docker.io/library/busybox"]}}, {}))
        self.deny("/v2/busybox/manifests/latest")


class CachedRepositoryTests(PolicySite, MirrorTestCase):
    """What the cache holds is refused too, once its repository is denied."""

    def use(self, config: Config, http: Any = None) -> None:
        super().use(config, http)
        self.configure(config)
        self.keep_requests()

    def test_a_cached_manifest_of_a_newly_denied_repository_is_refused(self) -> None:
        self.assertEqual(self.pull().status, 200)
        self.upstream.seen.clear()
        self.configure(build_config({"access": {"deny": ["docker.io/library/busybox"]}}, {}))
        self.assertRegistryError(self.pull(), 403, "DENIED")
        self.assertEqual(self.upstream.seen, [])


class RateTests(PolicyTestCase):
    def test_beyond_the_burst_a_429_with_retry_after(self) -> None:
        self.settings({"limits": {"rate_limit": "2/s", "rate_burst": 3}})
        statuses = [self.fetch("GET", "/v2/busybox/manifests/latest").status for _ in range(4)]
        self.assertEqual(statuses, [200, 200, 200, 429])
        response = self.fetch("GET", "/v2/busybox/manifests/latest")
        self.assertRegistryError(response, 429, "TOOMANYREQUESTS")
        self.assertEqual(response.header("retry-after"), "1")
        self.assertEqual(self.made[-1].refusal, "rate")
        self.assertEqual(len(self.upstream.requests_to(HUB_HOST)), 3)
        self.clock.advance(0.5)
        self.assertEqual(self.fetch("GET", "/v2/busybox/manifests/latest").status, 200)

    def test_retry_after_says_when_a_request_may_come(self) -> None:
        self.settings({"limits": {"rate_limit": "6/m", "rate_burst": 1}})
        self.assertEqual(self.fetch("GET", "/").status, 200)
        self.assertEqual(self.fetch("GET", "/").header("retry-after"), "10")
        self.clock.advance(7.5)
        self.assertEqual(self.fetch("GET", "/").header("retry-after"), "3")

    def test_each_client_has_its_own_rate(self) -> None:
        self.settings({"limits": {"rate_limit": "1/s"}})
        self.assertEqual(self.fetch_from(INSIDE, "GET", "/").status, 200)
        self.assertEqual(self.fetch_from(INSIDE, "GET", "/").status, 429)
        self.assertEqual(self.fetch_from(OUTSIDE, "GET", "/").status, 200)

    def test_a_user_is_limited_as_its_table_says_wherever_it_comes_from(self) -> None:
        toml = {"limits": {"rate_limit": "1/s"}, "users": {"ci": {"rate_limit": 0}}}
        self.settings(toml)
        self.user = "ci"
        statuses = {self.fetch_from(INSIDE, "GET", "/").status for _ in range(20)}
        self.assertEqual(statuses, {200})
        self.user = "alice"  # no table of her own: the [limits] one, for her alone
        self.assertEqual(self.fetch_from(INSIDE, "GET", "/").status, 200)
        self.assertEqual(self.fetch_from(OUTSIDE, "GET", "/").status, 429)
        self.user = None
        self.assertEqual(self.fetch_from(INSIDE, "GET", "/").status, 200)

    def test_a_reload_adds_and_lifts_the_limit(self) -> None:
        self.assertEqual({self.fetch("GET", "/").status for _ in range(5)}, {200})
        self.configure(build_config({"limits": {"rate_limit": "1/s"}}, {}))
        self.assertEqual([self.fetch("GET", "/").status for _ in range(2)], [200, 429])
        self.configure(build_config({}, {}))
        self.assertEqual(self.fetch("GET", "/").status, 200)


class PullsTests(PolicyTestCase):
    """Blob downloads at once, per client: the upstream never answers, so they last."""

    def setUp(self) -> None:
        super().setUp()
        self.http = ScriptedHTTP()
        self.use(build_config({"limits": {"max_pulls": 2}}, {}), http=self.http)

    def test_beyond_max_pulls_a_429_before_any_upstream_request(self) -> None:
        first = self.connect(INSIDE)
        for protocol, _ in (first, self.connect(INSIDE)):
            protocol.dataReceived(f"GET {BLOB_PATH} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
        self.assertEqual(len(self.http.calls), 2)
        response = self.fetch_from(INSIDE, "GET", BLOB_PATH)
        self.assertRegistryError(response, 429, "TOOMANYREQUESTS")
        self.assertEqual(self.made[-1].refusal, "pulls")
        self.assertEqual(len(self.http.calls), 2)
        # Another client, HEADs and manifests do not count.
        self.send_from(OUTSIDE, "GET", BLOB_PATH)
        self.send_from(INSIDE, "HEAD", BLOB_PATH)
        self.send_from(INSIDE, "GET", MANIFEST_PATH)
        self.assertEqual(len(self.http.calls), 5)
        # A download that ends makes room.
        first[0].connectionLost(Failure(ConnectionDone("client closed")))
        self.send_from(INSIDE, "GET", BLOB_PATH)
        self.assertEqual(len(self.http.calls), 6)

    def test_an_unlimited_user(self) -> None:
        self.use(
            build_config({"limits": {"max_pulls": 1}, "users": {"ci": {"max_pulls": 0}}}, {}),
            http=self.http,
        )
        self.user = "ci"
        for _ in range(5):
            self.send_from(INSIDE, "GET", BLOB_PATH)
        self.assertEqual(len(self.http.calls), 5)


class BandwidthTests(PolicyTestCase):
    """A limited client's bodies go out at its rate, and the access log waits for them."""

    TAGS = b'{"name":"busybox","tags":[' + b",".join(b'"%d"' % n for n in range(50_000)) + b"]}"

    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(
            HUB_HOST,
            "/v2/library/busybox/tags/list",
            reply(200, self.TAGS, content_type="application/json"),
        )

    def test_a_body_written_whole_goes_out_at_the_rate(self) -> None:
        rate = 64 * 1024
        self.settings({"limits": {"bandwidth_limit": "64KiB/s"}})
        transport = self.send("GET", "/v2/busybox/tags/list")
        self.clock.pump([0.05] * 40)
        sent = len(transport.value().partition(b"\r\n\r\n")[2])
        self.assertLessEqual(abs(sent - (capacity_for(rate) + 2 * rate)), 16 * 1024)
        self.assertEqual(self.access, [])  # not logged before its end
        self.clock.pump([0.05] * round((len(self.TAGS) / rate - 1) * 20))
        response = parse_response(transport.value(), "GET")
        self.assertEqual(response.json()["tags"][-1], "49999")
        [event] = self.access
        self.assertEqual(event["bytes"], len(response.body))
        self.assertTrue(self.made[0].finished)

    def test_an_unlimited_user_gets_it_at_once(self) -> None:
        self.settings(
            {"limits": {"bandwidth_limit": "64KiB/s"}, "users": {"ci": {"bandwidth_limit": 0}}}
        )
        self.user = "ci"
        response = self.fetch("GET", "/v2/busybox/tags/list")
        self.assertEqual(response.json()["tags"][-1], "49999")

    def test_no_limit_no_budget(self) -> None:
        self.settings({"limits": {"rate_limit": "100/s"}})
        self.fetch("GET", "/v2/busybox/tags/list")
        self.assertIsNone(self.made[0].budget)
        self.assertIsNone(self.made[0].budget_for)
