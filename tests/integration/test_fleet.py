"""A fleet end to end: three proxies, one Redis (Debian's redis-server), one S3 bucket
(SeaweedFS) and the token-auth registry upstream, pulled with skopeo.

What reached the upstream is read from the registry's own access log between marks.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness import largeblobs, web
from tests.harness.caching import (
    BLOB_OR_MANIFEST,
    BackgroundFetch,
    anonymous_token,
    fetch_blob,
    no_images,
    upstream_gets,
)
from tests.harness.images import ImageRecord, IndexRecord, push_image
from tests.harness.polling import wait_until
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.pulls import assert_same_image, assert_same_index, copy
from tests.harness.redis import RedisServer
from tests.harness.seaweed import Seaweed, unique
from tests.harness.upstream import Upstream, UpstreamFactory

PREFIX = "mirror/"


def start_fleet(
    start_proxy: StartProxy,
    tmp: Path,
    seaweed: Seaweed,
    redis: RedisServer,
    upstream: Upstream,
    size: int = 3,
    bucket: str = "",
    args: tuple[str, ...] = (),
) -> list[ProxyProcess]:
    """``size`` instances over one bucket and one Redis (a fresh key prefix)."""
    config = tmp / "fleet.toml"
    config.write_text(f"""
[cache.s3]
endpoint = "{seaweed.endpoint}"
bucket = "{bucket}"
prefix = "{PREFIX}"
access_key_id = "{seaweed.access_key}"
secret_access_key = "{seaweed.secret_key}"

[fleet]
redis = "{redis.url}"
prefix = "{unique("fleet")}:"
""")
    return [
        start_proxy(
            "--upstream",
            upstream.url,
            "--library-prefix",
            "--log-format",
            "json",
            "--config",
            str(config),
            "--cache-dir",
            str(tmp / f"cache-{name}"),
            *args,
            name=f"fleet-{name}",
        )
        for name in "abc"[:size]
    ]


def wait_shared(seaweed: Seaweed, bucket: str, redis: RedisServer, digests: list[str]) -> None:
    """Uploads and the access records are written after the client's response: wait until
    every blob is in S3 and the records are in Redis."""

    def uploaded() -> bool:
        return all(
            seaweed.request("HEAD", f"/{bucket}/{PREFIX}blobs/sha256/{d[7:]}").status == 200
            for d in digests
        )

    assert wait_until(uploaded, 60, interval=0.1)
    assert wait_until(lambda: redis.command("KEYS", "*access:*") != b"*0", 10, interval=0.1)


def test_what_one_instance_pulled_the_others_pull_with_no_upstream_get(
    start_proxy: StartProxy, upstream: Upstream, seaweed: Seaweed, redis: RedisServer, tmp: Path
) -> None:
    bucket = unique("fleet")
    a, b, c = start_fleet(start_proxy, tmp, seaweed, redis, upstream, bucket=bucket)
    alpine = upstream.images["alpine"]
    multiarch = upstream.images["multiarch"]
    assert isinstance(alpine, ImageRecord) and isinstance(multiarch, IndexRecord)
    copy(a, "alpine:3.20", tmp / "a-alpine")
    copy(a, multiarch.ref, tmp / "a-multiarch", "--all")
    wait_shared(seaweed, bucket, redis, [*alpine.blobs, *multiarch.blobs])

    for proxy in (b, c):
        mark = upstream.log_mark()
        copy(proxy, "alpine:3.20", tmp / f"{proxy.proc.name}-alpine")
        copy(proxy, multiarch.ref, tmp / f"{proxy.proc.name}-multiarch", "--all")
        assert_same_image(tmp / f"{proxy.proc.name}-alpine", alpine)
        assert_same_index(tmp / f"{proxy.proc.name}-multiarch", multiarch)
        assert upstream_gets(upstream, mark) == [], f"{proxy.proc.name} went upstream"
        # The records are shared too: public, and what is in it; not even a HEAD.
        touched = [(m, p) for m, p in upstream.requests(mark) if BLOB_OR_MANIFEST.match(p)]
        assert touched == [], touched
    statuses = {str(e.get("cache")) for e in b.access_events() if e.get("cache", "-") != "-"}
    assert statuses <= {"hit", "s3"}, statuses


def test_concurrent_cold_gets_on_three_instances_make_one_upstream_get(
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    seaweed: Seaweed,
    redis: RedisServer,
    tmp: Path,
) -> None:
    up = make_upstream(seed=no_images)
    name = f"public/{unique('cold')}"
    blob = largeblobs.put_large_blob(up.registry, name, 30_000_000, seed=name)
    fleet = start_fleet(start_proxy, tmp, seaweed, redis, up, bucket=unique("fleet"))
    tokens = {proxy.proc.name: anonymous_token(proxy, name) for proxy in fleet}
    mark = up.log_mark()
    clients = [
        BackgroundFetch(proxy, name, blob.digest, tokens[proxy.proc.name])
        for proxy in fleet
        for _ in range(5)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(120)
    results = [client.result for client in clients]
    assert all(r is not None and r.is_whole(blob) for r in results), results
    gets = upstream_gets(up, mark, blob.digest)
    assert len(gets) == 1, f"{len(gets)} upstream GETs: {gets}"


def test_redis_stopped_mid_way_pulls_still_succeed(
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    seaweed: Seaweed,
    redis: RedisServer,
    tmp: Path,
) -> None:
    up = make_upstream(seed=no_images)
    name = f"public/{unique('down')}"
    blobs = [
        largeblobs.put_large_blob(up.registry, name, 2_000_000, seed=f"{name}{i}") for i in range(3)
    ]
    a, b = start_fleet(start_proxy, tmp, seaweed, redis, up, size=2, bucket=unique("fleet"))
    first = fetch_blob(a, name, blobs[0].digest, anonymous_token(a, name))
    assert first.is_whole(blobs[0]), first
    redis.stop()
    for proxy in (a, b):
        token = anonymous_token(proxy, name)
        for blob in blobs:
            fetched = fetch_blob(proxy, name, blob.digest, token)
            assert fetched.is_whole(blob), (proxy.proc.name, fetched)
    for proxy in (a, b):
        log = proxy.log_text()
        assert log.count("fleet: Redis failed") == 1, (
            f"{proxy.proc.name} logs it once:\n{log[-3000:]}"
        )


def test_a_repository_gone_private_on_one_instance_is_refused_by_the_others(
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    seaweed: Seaweed,
    redis: RedisServer,
    tmp: Path,
) -> None:
    """A learns from the upstream that anonymous clients may no longer pull a repository
    (its tag revalidated after the TTL, refused); B, which holds the same image cached and
    public, must stop serving it to anonymous clients too: a HEAD upstream decides again."""
    up = make_upstream(seed=no_images)
    assert up.tokenserver is not None and up.pusher is not None
    name = f"public/{unique('private')}"
    image = push_image(up.registry, tmp, name, "1", [{"data": name.encode() * 1000}], up.pusher)
    bucket = unique("fleet")
    a, b = start_fleet(
        start_proxy, tmp, seaweed, redis, up, size=2, bucket=bucket, args=("--tag-ttl", "1")
    )
    copy(a, f"{name}:1", tmp / "a")
    wait_shared(seaweed, bucket, redis, list(image.blobs))
    copy(b, f"{name}:1", tmp / "b")  # from the fleet's cache: public for everyone
    manifest = f"{b.url}/v2/{name}/manifests/{image.manifest_digest}"
    assert web.request("GET", manifest, {"Accept": image.media_type}).status == 200

    up.tokenserver.make_private(name)
    time.sleep(1.2)  # the tag's TTL (1 s) runs out: a time, not a condition to poll
    refused = copy(a, f"{name}:1", tmp / "a-again", check=False)
    assert refused.returncode != 0, "the upstream refuses anonymous pulls now"

    def refused_by_b() -> bool:
        headers = {"Accept": image.media_type}
        return web.request("GET", manifest, headers).status == 401

    assert wait_until(refused_by_b, 10, interval=0.2), "b still serves it from cache"
    for digest in image.blobs:
        blob = web.request("GET", f"{b.url}/v2/{name}/blobs/{digest}")
        assert blob.status == 401, (digest, blob)
