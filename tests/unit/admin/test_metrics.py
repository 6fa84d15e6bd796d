"""/metrics' numbers (L{dockerproxy.admin.metrics}): counted from the access events of the
whole Site, from the upstream client's and S3's reports, and read from the cache."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.admin.collectors import StateCollector
from dockerproxy.admin.metrics import MAX_IMAGES, OTHER, Metrics, ratelimit_remaining
from dockerproxy.cache.s3 import S3BlobStore, S3Error
from dockerproxy.config import S3Config, build_config
from dockerproxy.digests import of
from tests.unit.admin.metered import MeteredTestCase
from tests.unit.cache.blobharness import Client, Harness, Upstream
from tests.unit.channelsite import head
from tests.unit.fakes import scratch_dir
from tests.unit.fakes3 import KEY_ID, S3_HOST, SECRET, FakeS3, StubHTTP, run
from tests.unit.mirror.mirrorsite import BLOB, UPSTREAM_PATH
from tests.unit.proxysite import HUB_HOST, ScriptedHTTP, reply

TOTAL = "dockerproxy_requests_total"


class RequestMetricsTests(MeteredTestCase):
    def test_requests_by_route_method_and_status(self) -> None:
        self.fetch("GET", "/v2/")
        self.fetch("HEAD", "/v2/")
        self.fetch("BREW", "/v2/")
        self.pull()
        self.assertEqual(self.sample(TOTAL, route="ping", method="GET", status="401"), 1)
        self.assertEqual(self.sample(TOTAL, route="ping", method="HEAD", status="401"), 1)
        self.assertEqual(self.sample(TOTAL, route="ping", method="other", status="405"), 1)
        self.assertEqual(self.sample(TOTAL, route="tag", method="GET", status="200"), 1)
        self.assertEqual(self.sample("dockerproxy_request_duration_seconds_count", route="ping"), 3)

    def test_cache_results_by_kind_and_bytes_by_route(self) -> None:
        self.serve_blob()
        self.pull()
        self.pull()
        self.get()
        self.pump()
        self.get()
        self.pump()
        counted = "dockerproxy_cache_requests_total"
        self.assertEqual(self.sample(counted, kind="tag", result="miss"), 1)
        self.assertEqual(self.sample(counted, kind="tag", result="hit"), 1)
        self.assertEqual(self.sample(counted, kind="blob", result="miss"), 1)
        self.assertEqual(self.sample(counted, kind="blob", result="hit"), 1)
        self.assertEqual(
            self.sample("dockerproxy_response_bytes_total", route="blob"), 2 * len(BLOB)
        )
        tally = self.metrics.tally
        self.assertEqual((tally.lookups, tally.hits), (4, 2))
        self.assertEqual(tally.images["docker.io/library/busybox"][0], 2, "two tag pulls")
        self.assertGreaterEqual(tally.images["docker.io/library/busybox"][1], 2 * len(BLOB))

    def test_the_channels_refusals_count_with_their_reason(self) -> None:
        channel = self.site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(head("/v2/", *(f"X-{i}: y" for i in range(101))))
        self.assertEqual(self.sample(TOTAL, route="ping", method="GET", status="431"), 1)
        self.assertEqual(
            self.sample("dockerproxy_refused_requests_total", reason="headers_too_large"), 1
        )

    def test_upstream_requests_bytes_and_rate_limit_by_registry(self) -> None:
        self.serve_blob(ratelimit_remaining="76;w=21600")
        self.get()
        self.pump()
        upstream = "dockerproxy_upstream_requests_total"
        self.assertEqual(self.sample(upstream, registry="docker.io", status="200"), 1)
        self.assertEqual(
            self.sample("dockerproxy_upstream_response_bytes_total", registry="docker.io"),
            len(BLOB),
        )
        self.assertEqual(
            self.sample("dockerproxy_upstream_ratelimit_remaining", registry="docker.io"), 76
        )
        self.assertEqual(self.metrics.reached_at, self.clock.seconds())
        self.assertEqual(self.metrics.tally.fetched, len(BLOB))
        self.assertEqual(self.metrics.tally.ratelimits, {"docker.io": 76})

    def test_a_head_fetches_no_bytes(self) -> None:
        self.upstream.on(HUB_HOST, "/v2/", reply(200, b"{}", content_length="2"))
        self.fetch("HEAD", "/v2/")
        self.assertIsNone(
            self.sample("dockerproxy_upstream_response_bytes_total", registry="docker.io")
        )

    def test_no_answer_in_time_is_a_timeout(self) -> None:
        self.use(build_config({"timeouts": {"headers": 5}}, {}), http=ScriptedHTTP())
        self.send("GET", "/v2/")
        self.clock.advance(5)
        upstream = "dockerproxy_upstream_requests_total"
        self.assertEqual(self.sample(upstream, registry="docker.io", status="timeout"), 1)
        self.assertIsNone(self.metrics.reached_at)

    def test_an_error_answer_counts_as_reached(self) -> None:
        self.use(
            build_config({}, {}), http=ScriptedHTTP(lambda: defer.fail(ConnectionRefusedError()))
        )
        self.fetch("GET", "/v2/")
        upstream = "dockerproxy_upstream_requests_total"
        self.assertEqual(self.sample(upstream, registry="docker.io", status="error"), 1)
        self.assertIsNone(self.metrics.reached_at)
        self.use(build_config({}, {}))
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, reply(503, b"down"))
        self.get()
        self.pump()
        self.assertEqual(self.sample(upstream, registry="docker.io", status="503"), 1)
        self.assertEqual(self.metrics.reached_at, self.clock.seconds())


class StateTests(SynchronousTestCase):
    def test_cache_size_entries_fills_and_followers(self) -> None:
        harness = Harness(scratch_dir(self), max_size=10**6)
        metrics = Metrics(harness.clock)
        collector = StateCollector()
        collector.blobs = harness.cache
        metrics.registry.register(collector)
        harness.put(b"x" * 100)
        filling = Upstream(harness.cache, of(b"y" * 50), 50)
        Client(harness.clock).served(harness.cache, filling.fill.digest)
        Client(harness.clock).served(harness.cache, filling.fill.digest)
        get = metrics.registry.get_sample_value
        self.assertEqual(get("dockerproxy_cache_size_bytes"), 100)
        self.assertEqual(get("dockerproxy_cache_max_size_bytes"), 10**6)
        self.assertEqual(get("dockerproxy_cache_blobs"), 1)
        self.assertEqual(get("dockerproxy_cache_fills_in_progress"), 1)
        self.assertEqual(get("dockerproxy_cache_fill_followers"), 2)
        self.assertEqual(get("dockerproxy_cache_coalesced_requests_total"), 2)
        self.assertEqual(get("dockerproxy_cache_fills_total"), 2)
        filling.sends(b"y" * 50)
        filling.ends()
        harness.clock.advance(1)
        self.assertEqual(get("dockerproxy_cache_fills_in_progress"), 0)
        self.assertEqual(get("dockerproxy_cache_blobs"), 2)


class S3ErrorTests(SynchronousTestCase):
    def test_failed_s3_requests_count_by_operation(self) -> None:
        clock = Clock()
        metrics = Metrics(clock)
        fake = FakeS3()
        fake.fail = lambda method, path, query: 500 if method == "HEAD" else None
        config = S3Config(
            f"http://{S3_HOST}", "blobs", access_key_id=KEY_ID, secret_access_key=SECRET
        )
        stub = StubHTTP(fake)
        store = S3BlobStore(stub, clock, config, meters=metrics)
        with self.assertRaises(S3Error):
            run(stub, clock, store.head(of(b"z")))
        self.assertEqual(
            metrics.registry.get_sample_value(
                "dockerproxy_s3_errors_total", {"operation": "HeadObject"}
            ),
            1,
        )


class UnitTests(SynchronousTestCase):
    def test_ratelimit_remaining(self) -> None:
        self.assertEqual(ratelimit_remaining([b"76;w=21600"]), 76)
        self.assertEqual(ratelimit_remaining([b"100"]), 100)
        self.assertIsNone(ratelimit_remaining(None))
        self.assertIsNone(ratelimit_remaining([b"lots"]))
        self.assertIsNone(ratelimit_remaining([b"9" * 40]))

    def test_images_tallied_between_samples_are_bounded(self) -> None:
        metrics = Metrics(Clock())
        event = {
            "route": "tag",
            "method": "GET",
            "status": 200,
            "bytes": 1,
            "duration": 0.0,
            "cache": "-",
        }
        for i in range(MAX_IMAGES + 5):
            metrics.observe({**event, "image": f"docker.io/x/{i}"})
        images = metrics.tally.take().images
        self.assertEqual(len(images), MAX_IMAGES + 1)
        self.assertEqual(images[OTHER], [5, 5])
        self.assertEqual(metrics.tally.images, {})

    def test_openmetrics_when_asked(self) -> None:
        metrics = Metrics(Clock())
        body, content_type = metrics.exposition(None)
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"))
        self.assertIn(b"# TYPE dockerproxy_requests_total counter", body)
        body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
        self.assertTrue(content_type.startswith("application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))
