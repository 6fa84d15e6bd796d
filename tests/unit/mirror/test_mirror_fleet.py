"""Instances in a fleet (L{dockerproxy.fleet}): tags and manifests one instance learned are
served by the others, one upstream GET per blob across them, and Redis down changes
nothing but that. Redis is L{tests.unit.fakeredis.FakeRedis} here; the real redis-server,
three proxies and SeaweedFS are in tests/integration/test_fleet.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from dockerproxy.config import CacheConfig, Config, build_config
from dockerproxy.fleet.locks import LOCK_TTL
from tests.unit.fakeredis import FakeRedis, down
from tests.unit.fakes import scratch_dir
from tests.unit.fakes3 import (
    BLOB,
    BLOB_PATH,
    CLIENT_PATH,
    DIGEST,
    KEY_ID,
    S3_HOST,
    SECRET,
    FakeS3,
    Registry,
    StubHTTP,
    parse,
    settle,
)
from tests.unit.mirror.mirrorsite import DIGEST as MANIFEST_DIGEST
from tests.unit.mirror.mirrorsite import STALE, TAG_PATH, TTL, MirrorTestCase
from tests.unit.proxysite import MANIFEST, MIRROR, make_parts

LOCK_KEY = f"fleet:fill:sha256:{DIGEST[7:]}"


class SharedTagTests(MirrorTestCase):
    """Two instances, A and B, over one upstream and one Redis; no S3: manifests in Redis."""

    def use(self, config: Config, http: Any = None) -> None:
        self.redis = FakeRedis(self.clock)
        self.sites = {}
        for name in ("a", "b"):
            cache = CacheConfig(
                directory=str(scratch_dir(self) / name), tag_ttl=TTL, stale_max_age=STALE
            )
            self.proxy, self.mirror, self.sites[name] = make_parts(
                replace(config, cache=cache), self.clock, http or self.stub, redis=self.redis
            )
        self.site = self.sites["a"]

    def on(self, name: str) -> None:
        self.site = self.sites[name]

    def test_a_tag_one_instance_pulled_is_served_by_another_within_its_ttl(self) -> None:
        self.assertEqual(self.pull().status, 200)
        self.on("b")
        self.clock.advance(TTL / 2)
        response = self.pull()
        self.assertEqual((response.status, response.body), (200, MANIFEST))
        self.assertEqual(response.header("docker-content-digest"), MANIFEST_DIGEST)
        self.assertEqual(self.upstream_calls(), [("GET", TAG_PATH)], "B asked nothing upstream")
        self.assertEqual(self.access[-1]["cache"], "hit", "the fleet's records: it is public")

    def test_a_refusal_one_instance_learned_stops_the_others_serving_from_cache(self) -> None:
        self.pull()
        by_digest = TAG_PATH.replace("latest", MANIFEST_DIGEST)
        self.assertEqual(self.pull(path=by_digest).status, 200)
        self.assertEqual(self.access[-1]["cache"], "hit")
        # The repository turns private: B's revalidation of the tag hears it.
        self.serve_tag(MANIFEST, MANIFEST_DIGEST, code=401)
        self.serve_tag(MANIFEST, MANIFEST_DIGEST, code=401, path=by_digest)
        self.clock.advance(TTL + 1)
        self.on("b")
        self.assertEqual(self.pull().status, 401)
        self.clock.advance(1)  # B's records are written
        self.on("a")
        self.assertEqual(self.pull(path=by_digest).status, 401, "A asked the upstream")
        self.assertEqual(self.upstream_calls()[-1], ("HEAD", by_digest))

    def test_without_redis_the_refusal_stays_with_the_instance_that_heard_it(self) -> None:
        self.pull()
        by_digest = TAG_PATH.replace("latest", MANIFEST_DIGEST)
        self.serve_tag(MANIFEST, MANIFEST_DIGEST, code=401)
        self.clock.advance(TTL + 1)
        self.redis.fail = down()
        self.on("b")
        self.assertEqual(self.pull().status, 401)
        self.clock.advance(1)
        self.on("a")
        self.assertEqual(self.pull(path=by_digest).status, 200, "A's own records decide")
        self.assertEqual(self.access[-1]["cache"], "hit")

    def test_a_manifest_by_digest_comes_from_the_fleet(self) -> None:
        self.pull()
        by_digest = TAG_PATH.replace("latest", MANIFEST_DIGEST)
        self.serve_tag(MANIFEST, MANIFEST_DIGEST, path=by_digest)
        self.on("b")
        response = self.pull(path=by_digest)
        self.assertEqual((response.status, response.body), (200, MANIFEST))
        self.assertEqual([c[0] for c in self.upstream_calls()], ["GET", "HEAD"])

    def test_past_the_ttl_the_fleets_entry_is_revalidated(self) -> None:
        self.pull()
        self.on("b")
        self.clock.advance(TTL + 1)
        self.pull()
        self.assertEqual([c[0] for c in self.upstream_calls()], ["GET", "HEAD"])

    def test_a_damaged_manifest_in_redis_is_never_served(self) -> None:
        self.pull()
        key = f"fleet:manifest:sha256:{MANIFEST_DIGEST[7:]}"
        self.redis.data[key] = self.redis.data[key].replace(b'"data": "', b'"data": "AAAA')
        self.on("b")
        response = self.pull()
        self.assertEqual((response.status, response.body), (200, MANIFEST))
        self.assertEqual([c[0] for c in self.upstream_calls()], ["GET", "GET"])

    def test_redis_down_each_instance_goes_on_alone(self) -> None:
        self.redis.fail = down()
        self.assertEqual(self.pull().status, 200)
        self.on("b")
        response = self.pull()
        self.assertEqual((response.status, response.body), (200, MANIFEST))
        self.assertEqual([c[0] for c in self.upstream_calls()], ["GET", "GET"])


class FillLockTests(SynchronousTestCase):
    """Two instances over one S3 tier and one Redis, with the registry of L{tests.unit.fakes3}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.s3 = FakeS3()
        self.registry = Registry(self.s3)
        self.stub = StubHTTP(self.registry)
        self.redis = FakeRedis(self.clock)
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.sites = [self.instance(name) for name in ("a", "b")]

    def instance(self, name: str) -> Site:
        s3 = {
            "endpoint": f"http://{S3_HOST}",
            "bucket": "cache",
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
        }
        directory = str(scratch_dir(self) / name)
        config = build_config({"cache": {"dir": directory, "s3": s3}}, {})
        return make_parts(config, self.clock, self.stub, redis=self.redis)[2]

    def start(self, site: Site) -> StringTransport:
        transport = StringTransport()
        protocol = site.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(f"GET {CLIENT_PATH} HTTP/1.1\r\nHost: {MIRROR}\r\n\r\n".encode())
        return transport

    def upstream_gets(self) -> int:
        return self.registry.seen.count(("GET", BLOB_PATH))

    def log(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events)

    def test_a_fill_holds_the_lock_until_its_upload_is_done(self) -> None:
        transport = self.start(self.sites[0])
        settle(self.stub, self.clock)
        self.assertEqual(parse(transport.value())[::2], (200, BLOB))
        self.assertEqual(self.upstream_gets(), 1)
        self.assertIn(f"blobs/sha256/{DIGEST[7:]}", "".join(self.s3.objects))
        self.assertNotIn(LOCK_KEY, self.redis.data, "released after the upload")
        self.assertIn("set", self.redis.calls)

    def test_another_instances_fill_is_waited_for_then_taken_from_s3(self) -> None:
        self.redis.set(LOCK_KEY, "theirs", px=int(LOCK_TTL * 1000))
        transport = self.start(self.sites[1])
        settle(self.stub, self.clock)
        self.assertEqual(transport.value(), b"", "waiting for the other fill")
        self.assertEqual(self.upstream_gets(), 0)
        # The other instance uploads and releases its lock.
        self.s3.buckets.add("cache")
        self.s3.objects[f"blobs/sha256/{DIGEST[7:]}"] = BLOB
        del self.redis.data[LOCK_KEY]
        self.clock.advance(1)
        settle(self.stub, self.clock)
        self.assertEqual(parse(transport.value())[::2], (200, BLOB))
        self.assertEqual(self.upstream_gets(), 0, "taken from S3")

    def test_a_dead_holders_lock_expires_and_a_waiter_takes_over(self) -> None:
        self.redis.set(LOCK_KEY, "dead", px=int(LOCK_TTL * 1000))
        transport = self.start(self.sites[1])
        for _ in range(int(LOCK_TTL) * 4 - 4):
            self.clock.advance(0.25)
            settle(self.stub, self.clock)
        self.assertEqual((transport.value(), self.upstream_gets()), (b"", 0))
        for _ in range(8):
            self.clock.advance(0.25)
            settle(self.stub, self.clock)
        self.assertEqual(parse(transport.value())[::2], (200, BLOB))
        self.assertEqual(self.upstream_gets(), 1)

    def test_a_failed_upload_releases_the_lock_and_the_others_fill_alone(self) -> None:
        self.s3.fail = lambda method, path, query: 500 if method == "PUT" else None
        transport = self.start(self.sites[0])
        settle(self.stub, self.clock)
        self.assertEqual(parse(transport.value())[::2], (200, BLOB))
        self.assertIn("cannot upload", self.log())
        self.assertNotIn(LOCK_KEY, self.redis.data)
        self.assertIn(LOCK_KEY.replace(":fill:", ":unshared:"), self.redis.data)
        sets = self.redis.calls.count("set")
        transport = self.start(self.sites[1])
        settle(self.stub, self.clock)
        self.assertEqual(parse(transport.value())[::2], (200, BLOB))
        self.assertEqual(self.upstream_gets(), 2, "nothing in S3 to wait for")
        self.assertEqual(self.redis.calls.count("set"), sets, "B took no lock")

    def test_redis_down_the_instance_fills_alone_and_says_so_once(self) -> None:
        self.redis.fail = down()
        for site in self.sites:
            transport = self.start(site)
            settle(self.stub, self.clock)
            self.assertEqual(parse(transport.value())[::2], (200, BLOB))
        self.assertEqual(self.upstream_gets(), 1, "the second instance found it in S3")
        self.assertEqual(self.log().count("fleet: Redis failed"), 2, "once per instance")
