"""The pull-through cache, end to end: real clients, a real dockerproxy, a real upstream registry.

What reached the upstream is read from the registry's own access log (between log marks), and
what the cache holds from the cache directory itself (``blobs/<alg>/<xx>/<hex>`` committed,
``tmp/`` partial fills).

Some tests put a ``Gate`` (tests.harness.gate) between the proxy and the registry: a plain TCP
forwarder that holds each upstream response after a number of bytes until released. A fill of
a large blob then provably cannot finish while the test looks at it, so "clients got bytes
before the fill completed" and "kill -9 in the middle of a fill" are facts, not races against
a loopback that moves 100 MB in a fraction of a second.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.harness import largeblobs, web
from tests.harness.caching import (
    BLOB_OR_MANIFEST,
    BackgroundFetch,
    MiB,
    anonymous_token,
    assert_fetched_from_upstream,
    cache_events,
    committed_blobs,
    committed_path,
    fetch_blob,
    mirror_of,
    no_images,
    partials,
    upstream_gets,
)
from tests.harness.gate import Gate
from tests.harness.images import ImageRecord, IndexRecord
from tests.harness.polling import wait_until
from tests.harness.proxy import StartProxy
from tests.harness.pulls import assert_same_image, assert_same_index, copy
from tests.harness.upstream import Upstream, UpstreamFactory

# -- 1. warm pulls stay local -------------------------------------------------------------------


def test_warm_pulls_make_no_upstream_blob_or_manifest_gets(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, upstream.url, tmp / "cache")
    alpine = upstream.images["alpine"]
    multiarch = upstream.images["multiarch"]
    assert isinstance(alpine, ImageRecord) and isinstance(multiarch, IndexRecord)

    for attempt in ("cold", "warm"):
        mark = upstream.log_mark()
        seen = len(cache_events(proxy))
        copy(proxy, "alpine:3.20", tmp / f"{attempt}-alpine")
        copy(proxy, multiarch.ref, tmp / f"{attempt}-multiarch", "--all")
        assert_same_image(tmp / f"{attempt}-alpine", alpine)
        assert_same_index(tmp / f"{attempt}-multiarch", multiarch)
        gets = upstream_gets(upstream, mark)
        if attempt == "cold":
            blob_gets = sorted(p.rsplit("/", 1)[1] for p in gets if "/blobs/" in p)
            # Each blob went upstream exactly once: a cold pull fills, it never double-fetches.
            assert blob_gets == sorted([*alpine.blobs, *multiarch.blobs]), gets
            assert any(p == "/v2/library/alpine/manifests/3.20" for p in gets), gets
            assert any(p == "/v2/public/multiarch/manifests/1" for p in gets), gets
        else:
            assert gets == [], f"the warm pull went upstream: {gets}"
            # Public repositories within the tag TTL: not even a HEAD (pings and tokens only).
            touched = [
                (m, p) for m, p in upstream.requests(mark, settle=0) if BLOB_OR_MANIFEST.match(p)
            ]
            assert touched == [], touched

    warm = cache_events(proxy)[seen:]
    assert warm and all(status == "hit" for _, status in warm), warm


# -- 2. concurrent clients share one fill -------------------------------------------------------


def test_concurrent_clients_share_one_upstream_fetch_and_stream_before_it_ends(
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    gate_factory: Callable[[int, int], Gate],
    tmp: Path,
) -> None:
    """20 clients, one uncached 100 MiB blob: one upstream GET, 20 verified bodies.

    The upstream answer passes a gate that holds it after 16 MiB: until the test releases it
    the fill cannot complete, so every client that already has its first MiB got it from the
    fill in progress (and the committed file does not exist yet: the test checks that too).
    """
    up = make_upstream(seed=no_images)
    name = f"public/shared-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, 100 * MiB, seed="shared")
    gate = gate_factory(up.port, 16 * MiB)
    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, gate.url, cache)
    token = anonymous_token(proxy, name)
    mark = up.log_mark()

    clients = [BackgroundFetch(proxy, name, blob.digest, token) for _ in range(20)]
    for client in clients:
        client.start()
    try:
        deadline = time.monotonic() + 30
        got_first = [c.first_mib.wait(max(deadline - time.monotonic(), 0)) for c in clients]
        # A client may have its first MiB before the upstream body reaches the hold point
        # (fine: the fill was in progress then too); wait for the hold before the checks below.
        held = gate.wait_holding(max(deadline - time.monotonic(), 0)) and gate.holding
        committed_early = committed_path(cache, blob.digest).exists()
        filling = partials(cache)
    finally:
        gate.release()
        for client in clients:
            client.join(120)

    results = [client.result for client in clients]
    blob_gets = upstream_gets(up, mark, re.escape(blob.digest))
    assert len(blob_gets) == 1, f"{len(blob_gets)} upstream GETs of the blob: {blob_gets}"
    for i, result in enumerate(results):
        assert result is not None and result.error is None, (i, result)
        assert (result.status, result.length, result.digest) == (200, blob.size, blob.digest)
    # While the gate held the upstream body, the fill could not finish ...
    assert held, "the upstream body never reached the gate's hold point"
    assert not committed_early, "the blob was committed while its body was still held"
    assert len(filling) == 1 and filling[0].name.endswith(".partial"), filling
    # ... and yet every client had its first MiB: streamed from the fill in progress.
    assert all(got_first), got_first
    assert all(r is not None and r.first_mib_at is not None for r in results)
    assert committed_blobs(cache) == {blob.digest: blob.size}
    assert partials(cache) == []


# -- 3. the upstream is down --------------------------------------------------------------------


def test_cached_image_pulls_while_upstream_is_down(
    start_proxy: StartProxy, make_upstream: UpstreamFactory, tmp: Path
) -> None:
    """A public image pulled once keeps pulling with skopeo while the upstream is down.

    skopeo pings ``/v2/`` first and gives up on a 502, so with a cache the proxy answers a
    failed ping with its own challenge; with the token realm down too, ``/v2/auth`` gives an
    anonymous client the proxy's anonymous token (never forwarded, anonymous for the access
    rules). Uncached content is still a clear 502 naming the upstream.
    """
    up = make_upstream()
    alpine = up.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    proxy = mirror_of(start_proxy, up.url, tmp / "cache")
    copy(proxy, "alpine:3.20", tmp / "first")
    assert_same_image(tmp / "first", alpine)

    up.registry.stop()
    seen = len(cache_events(proxy))
    # The registry is gone (its token server still answers): the ping cannot be relayed,
    # the tag is within its TTL and every blob is cached.
    copy(proxy, "alpine:3.20", tmp / "registry-down")
    assert_same_image(tmp / "registry-down", alpine)

    assert up.tokenserver is not None
    up.tokenserver.stop()
    # Nothing of the upstream answers now, not even its token realm: an anonymous client
    # gets the proxy's own anonymous token and the public image from the cache.
    copy(proxy, "alpine:3.20", tmp / "all-down")
    assert_same_image(tmp / "all-down", alpine)
    offline = cache_events(proxy)[seen:]
    assert offline and all(status == "hit" for _, status in offline), offline

    for path in (
        "/v2/library/alpine/manifests/3.21",
        "/v2/library/never-pulled/manifests/1",
        f"/v2/library/never-pulled/blobs/sha256:{'1' * 64}",
    ):
        response = web.request("GET", proxy.url + path)
        assert response.status == 502, (path, response)
        error = response.json()["errors"][0]
        assert error["code"] == "UNAVAILABLE", error
        assert up.url in error["message"] and "refused" in error["message"], error
        assert error["detail"] == {"upstream": up.url}, error
    refused = copy(proxy, "library/never-pulled:1", tmp / "uncached", check=False)
    assert refused.returncode != 0
    assert "502 Bad Gateway" in refused.stderr, refused.stderr


# -- 4. a corrupt upstream blob is never cached -------------------------------------------------


def test_corrupt_upstream_blob_is_refused_and_not_cached(
    start_proxy: StartProxy, make_upstream: UpstreamFactory, tmp: Path
) -> None:
    up = make_upstream(seed=no_images)
    name = f"public/corrupt-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, 8 * MiB, seed="corrupt")
    storage = up.registry.blob_path(blob.digest)
    original = storage.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF  # same size: only the digest can tell
    storage.write_bytes(bytes(damaged))

    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, up.url, cache)
    token = anonymous_token(proxy, name)
    bad = fetch_blob(proxy, name, blob.digest, token)
    assert bad.error is not None, f"a corrupt body ended as if complete: {bad}"
    assert isinstance(
        bad.error, (http.client.IncompleteRead, ConnectionError, http.client.RemoteDisconnected)
    ), repr(bad.error)
    assert bad.length < blob.size
    assert wait_until(lambda: "digest mismatch" in proxy.log_text()), proxy.log_text()[-2000:]
    assert committed_blobs(cache) == {}, "a corrupt blob was cached"
    # The failed fill's partial file is unlinked on the disk pool, just after the log line.
    assert wait_until(lambda: partials(cache) == []), partials(cache)

    storage.write_bytes(original)
    assert_fetched_from_upstream(proxy, up, name, blob, token)
    assert committed_blobs(cache) == {blob.digest: blob.size}

    mark = up.log_mark()
    again = fetch_blob(proxy, name, blob.digest, token)
    assert (again.length, again.digest) == (blob.size, blob.digest)
    assert upstream_gets(up, mark) == [], "the verified blob is served from the cache"


# -- 5. kill -9 in the middle of a fill ---------------------------------------------------------


def test_kill_9_mid_fill_leaves_no_partial_blob(
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    gate_factory: Callable[[int, int], Gate],
    tmp: Path,
) -> None:
    up = make_upstream(seed=no_images)
    name = f"public/killed-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, 200 * MiB, seed="killed")
    cache = tmp / "cache"
    gate = gate_factory(up.port, 24 * MiB)
    first = mirror_of(start_proxy, gate.url, cache, name="killed")
    token = anonymous_token(first, name)

    reader = BackgroundFetch(first, name, blob.digest, token, hold=True)
    reader.start()
    try:
        assert reader.first_mib.wait(30), "no bytes reached the client"
        assert gate.wait_holding(30), "the upstream body never reached the gate's hold point"
        assert len(partials(cache)) == 1, "the fill should be in progress"
        os.kill(first.pid, signal.SIGKILL)
        first.proc.proc.wait(10)  # type: ignore[union-attr]
    finally:
        reader.resume.set()
        reader.join(60)
        first.stop()
        gate.release()
    cut = reader.result
    assert cut is not None and cut.error is not None and cut.length < blob.size, cut
    leftover = partials(cache)
    assert len(leftover) == 1 and leftover[0].stat().st_size < blob.size, leftover
    assert committed_blobs(cache) == {}

    second = mirror_of(start_proxy, up.url, cache, name="restarted")
    assert partials(cache) == [], "the partial of the killed fill survived the restart"
    assert committed_blobs(cache) == {}
    token = anonymous_token(second, name)
    assert_fetched_from_upstream(second, up, name, blob, token)
    assert committed_blobs(cache) == {blob.digest: blob.size}


# -- 6. the size bound holds --------------------------------------------------------------------


def test_cache_stays_under_its_size_bound(
    start_proxy: StartProxy, make_upstream: UpstreamFactory, tmp: Path
) -> None:
    up = make_upstream(seed=no_images)
    name = f"public/evict-{uuid.uuid4().hex[:8]}"
    bound = 30 * 1000**2
    blobs = [
        largeblobs.put_large_blob(up.registry, name, 12 * 1000**2, seed=f"evict-{i}")
        for i in range(4)
    ]
    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, up.url, cache, "--cache-max-size", "30MB")
    token = anonymous_token(proxy, name)
    for blob in [*blobs, blobs[0]]:  # the first one again, after it was evicted
        result = fetch_blob(proxy, name, blob.digest, token)
        assert result.is_whole(blob), result
        held = committed_blobs(cache)
        assert sum(held.values()) <= bound, held
        assert held.get(blob.digest) == blob.size, "the blob just pulled is cached"
    held = committed_blobs(cache)
    assert len(held) == 2 and set(held) == {blobs[3].digest, blobs[0].digest}, held
    assert partials(cache) == []


# -- 7. private content is served from cache only to who may read it ----------------------------


def test_private_image_is_cached_for_authorized_clients_only(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    secret = upstream.images["secret"]
    assert isinstance(secret, ImageRecord) and upstream.reader is not None
    user, password = upstream.reader
    proxy = mirror_of(start_proxy, upstream.url, tmp / "cache")
    copy(proxy, secret.ref, tmp / "authorized", f"--src-creds={user}:{password}")
    assert_same_image(tmp / "authorized", secret)
    assert set(secret.blobs) <= set(committed_blobs(tmp / "cache"))

    anonymous = copy(proxy, secret.ref, tmp / "anonymous", check=False)
    assert anonymous.returncode != 0
    assert re.search(r"unauthorized|denied", anonymous.stderr, re.I), anonymous.stderr
    wrong = copy(
        proxy, secret.ref, tmp / "wrong", f"--src-creds={user}:not-{password}", check=False
    )
    assert wrong.returncode != 0
    assert not (tmp / "anonymous" / "index.json").exists()
    assert not (tmp / "wrong" / "index.json").exists()
    # Not even a blob by digest leaves the cache for a client without access.
    layer = secret.layers[0].digest
    for authorization in ({}, {"Authorization": "Basic Og=="}):
        response = web.request("GET", f"{proxy.url}/v2/{secret.name}/blobs/{layer}", authorization)
        assert response.status == 401, response
        assert layer not in response.body.decode("latin-1")

    mark = upstream.log_mark()
    seen = len(cache_events(proxy))
    copy(proxy, secret.ref, tmp / "again", f"--src-creds={user}:{password}")
    assert_same_image(tmp / "again", secret)
    assert upstream_gets(upstream, mark) == [], "served from the cache after an access check"
    served = cache_events(proxy)[seen:]
    assert served and all(status in ("hit", "revalidated") for _, status in served), served
