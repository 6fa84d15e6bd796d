"""Warming the cache, end to end: ``dockerproxy warm`` (the installed command) and the
daemon's ``[[warm]]`` refresh pull through a real proxy in front of a real registry, then
skopeo pulls the image and the registry sees no manifest or blob GET.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from dockerproxy.cache.flocks import Claim, FillLocks
from dockerproxy.digests import parse
from tests.harness.authproxy import ALICE, creds, htpasswd_file
from tests.harness.caching import (
    BLOB_OR_MANIFEST,
    cache_events,
    committed_blobs,
    mirror_of,
    partials,
    upstream_gets,
)
from tests.harness.images import ImageRecord, IndexRecord, pseudo_random, push_image
from tests.harness.polling import wait_until
from tests.harness.ports import free_port
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.pulls import assert_same_image, copy
from tests.harness.skopeo import skopeo
from tests.harness.tls import make_ca
from tests.harness.upstream import Upstream


def warm(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``dockerproxy warm``, its output captured (not a terminal: no bars)."""
    command = str(Path(sys.executable).with_name("dockerproxy"))
    return subprocess.run(
        [command, "warm", *args], capture_output=True, text=True, timeout=120, check=False
    )


def pull_is_local(
    proxy: ProxyProcess, upstream: Upstream, ref: str, image: ImageRecord, dest: Path
) -> None:
    """skopeo pulls ``ref`` through the proxy intact, and the registry sees no manifest or
    blob request at all (within the tag's TTL, not even a HEAD): every answer a hit."""
    mark = upstream.log_mark()
    seen = len(cache_events(proxy))
    copy(proxy, ref, dest)
    assert_same_image(dest, image)
    assert upstream_gets(upstream, mark) == []
    touched = [(m, p) for m, p in upstream.requests(mark, settle=0) if BLOB_OR_MANIFEST.match(p)]
    assert touched == [], touched
    served = cache_events(proxy)[seen:]
    assert served and all(status == "hit" for _, status in served), served


def test_warm_then_pull_makes_no_upstream_request(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, upstream.url, tmp / "cache")
    alpine = upstream.images["alpine"]
    multiarch = upstream.images["multiarch"]
    assert isinstance(alpine, ImageRecord) and isinstance(multiarch, IndexRecord)
    arm64 = multiarch.platform("arm64")

    result = warm("--proxy", proxy.url, "alpine:3.20", multiarch.ref, "--platform", "linux/arm64")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "warmed 2 of 2 images", result.stdout
    assert f"ok alpine:3.20: 1 manifests, {len(alpine.blobs)} blobs" in result.stdout
    assert f"ok {multiarch.ref}: 2 manifests, {len(arm64.blobs)} blobs" in result.stdout
    cached = committed_blobs(tmp / "cache")
    assert set(alpine.blobs) | set(arm64.blobs) <= set(cached)
    # Only the platform asked for: amd64's own layers stayed upstream.
    amd64_only = set(multiarch.platform("amd64").layer_digests) - set(arm64.layer_digests)
    assert amd64_only and not amd64_only & set(cached)

    pull_is_local(proxy, upstream, "alpine:3.20", alpine, tmp / "alpine")
    pull_is_local(
        proxy, upstream, f"{multiarch.name}@{arm64.manifest_digest}", arm64, tmp / "arm64"
    )

    # A re-run is the resumption: everything is a hit, nothing goes upstream.
    mark = upstream.log_mark()
    again = warm("--proxy", proxy.url, "alpine:3.20")
    assert again.returncode == 0, again.stderr
    assert upstream_gets(upstream, mark) == []


def test_a_failing_image_gives_status_1_and_a_summary(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    proxy = mirror_of(start_proxy, upstream.url, tmp / "cache")
    result = warm("--proxy", proxy.url, "alpine:3.20", "library/nothing-here:1")
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert "ok alpine:3.20: " in result.stdout
    failed = [line for line in lines if line.startswith("failed library/nothing-here:1: ")]
    assert len(failed) == 1 and "404" in failed[0], lines
    assert lines[-1] == "warmed 1 of 2 images"
    assert "Traceback" not in result.stderr

    usage = warm("--proxy", proxy.url, "Not An Image")
    assert usage.returncode == 2
    assert usage.stderr.startswith("dockerproxy warm: "), usage.stderr


def test_daemon_refresh_warms_the_configured_images(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    config = tmp / "config.toml"
    config.write_text('[[warm]]\nimages = ["alpine:3.20"]\ninterval = 1\n')
    proxy = mirror_of(start_proxy, upstream.url, tmp / "cache", "--config", str(config))

    assert wait_until(lambda: set(alpine.blobs) <= set(committed_blobs(tmp / "cache")), 30), (
        proxy.log_text()
    )
    pull_is_local(proxy, upstream, "alpine:3.20", alpine, tmp / "alpine")


def test_daemon_refresh_fetches_an_upstream_release_before_any_client(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    name = f"public/release-{uuid.uuid4().hex[:8]}"
    base = {"etc/release": b"base\n"}

    def release(version: str) -> ImageRecord:
        app = {f"bin/app-{version}": pseudo_random(64 * 1024, f"{name}-{version}")}
        return push_image(
            upstream.registry, tmp / "layouts", name, "1", [base, app], upstream.pusher
        )

    first = release("v1")
    config = tmp / "config.toml"
    config.write_text(f'[[warm]]\nimages = ["{name}:1"]\ninterval = 1\n')
    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, upstream.url, cache, "--config", str(config), "--tag-ttl", "1")
    assert wait_until(lambda: set(first.blobs) <= set(committed_blobs(cache)), 30)

    second = release("v2")
    assert set(second.blobs) - set(first.blobs)
    assert wait_until(lambda: set(second.blobs) <= set(committed_blobs(cache)), 30), (
        proxy.log_text()[-3000:]
    )
    # The client's first pull of the new release: its tag may be revalidated (a HEAD, the TTL
    # is 1 s here), but no manifest or blob is fetched: the refresh did it.
    mark = upstream.log_mark()
    copy(proxy, f"{name}:1", tmp / "pulled")
    assert_same_image(tmp / "pulled", second)
    assert upstream_gets(upstream, mark) == []


def test_daemon_refresh_through_a_tls_listener_when_clients_log_in(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    """The refresh reaches an ssl: listener (its certificate names another host than the
    address it dials) and needs no user: it presents a token the proxy signs itself."""
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    ca = make_ca(tmp / "certs")
    port = free_port()
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={ca.server_key}:certKey={ca.server_cert}"
    config = tmp / "config.toml"
    config.write_text('[[warm]]\nimages = ["alpine:3.20"]\ninterval = 1\n')
    htpasswd = htpasswd_file(tmp / "htpasswd", ALICE)
    cache = tmp / "cache"
    proxy = mirror_of(
        start_proxy,
        upstream.url,
        cache,
        "--config",
        str(config),
        "--auth-htpasswd",
        str(htpasswd),
        "--state-dir",
        str(tmp / "state"),
        port=port,
        listen=listen,
        scheme="https",
    )
    assert wait_until(lambda: set(alpine.blobs) <= set(committed_blobs(cache)), 30), (
        proxy.log_text()[-3000:]
    )
    users = {str(e["user"]) for e in proxy.access_events() if "/blobs/" in str(e["path"])}
    assert users == {"dockerproxy:warm"}, users

    cert_dir = tmp / "client-certs"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(ca.ca_cert.read_bytes())
    mark = upstream.log_mark()
    skopeo(
        "copy",
        f"--src-cert-dir={cert_dir}",
        creds(ALICE),
        f"docker://{proxy.host}/alpine:3.20",
        f"oci:{tmp / 'pulled'}:x",
    )
    assert_same_image(tmp / "pulled", alpine)
    assert upstream_gets(upstream, mark) == []


def test_sighup_adds_warm_entries(start_proxy: StartProxy, upstream: Upstream, tmp: Path) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    config = tmp / "config.toml"
    config.write_text("")
    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, upstream.url, cache, "--config", str(config))
    assert committed_blobs(cache) == {}
    config.write_text('[[warm]]\nimages = ["alpine:3.20"]\n')
    os.kill(proxy.pid, signal.SIGHUP)
    assert wait_until(lambda: set(alpine.blobs) <= set(committed_blobs(cache)), 30), (
        proxy.log_text()[-3000:]
    )


def test_warm_straight_into_a_cache_directory_with_no_proxy_running(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    """``--cache-dir``: the proxy's own code in the warm process, on a loopback port of its
    own; a proxy started afterwards on that directory serves the pull from it alone. With
    logins configured, no user is needed: the warm presents the proxy's own token."""
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    cache, state = tmp / "cache", tmp / "state"
    htpasswd = htpasswd_file(tmp / "htpasswd", ALICE)
    config = tmp / "config.toml"
    config.write_text(
        f'upstream = "{upstream.url}"\nlibrary_prefix = true\npresets = false\n'
        f'state_dir = "{state}"\n[auth]\nhtpasswd = "{htpasswd}"\n'
    )
    result = warm("--cache-dir", str(cache), "--config", str(config), "alpine:3.20")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines()[-1] == "warmed 1 of 1 images", result.stdout
    assert set(alpine.blobs) <= set(committed_blobs(cache))
    assert partials(cache) == [], "the warm stopped cleanly: nothing half-written"

    proxy = mirror_of(start_proxy, upstream.url, cache, "--config", str(config))
    mark = upstream.log_mark()
    copy(proxy, "alpine:3.20", tmp / "p", creds(ALICE))
    assert_same_image(tmp / "p", alpine)
    assert upstream_gets(upstream, mark) == []

    refused = warm("--cache-dir", str(cache), "--proxy", proxy.url, "alpine:3.20")
    assert refused.returncode == 2 and "--cache-dir" in refused.stderr, refused.stderr
    off = tmp / "nocache.toml"
    off.write_text(f'upstream = "{upstream.url}"\n[cache]\nenabled = false\n')
    refused = warm("--cache-dir", str(cache), "--config", str(off), "alpine:3.20")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("dockerproxy warm: "), refused.stderr


def test_warm_into_the_directory_of_a_running_proxy_with_workers(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    """``--cache-dir`` beside a proxy running on that directory: the warm shares it as a
    worker does, so it leaves the proxy's fills alone (a claimed fill's files in ``tmp/``
    stay) and the running proxy serves what was warmed at once, with no upstream GET."""
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    cache = tmp / "cache"
    proxy = mirror_of(start_proxy, upstream.url, cache, "--workers", "2")
    # A fill of the running proxy's, under way: its claim held as a worker holds it.
    claim = FillLocks(cache / "tmp").claim(parse("sha256:" + "e" * 64))
    assert isinstance(claim, Claim)
    claim.partial_path.write_bytes(b"half a blob")
    config = tmp / "config.toml"
    config.write_text(f'upstream = "{upstream.url}"\nlibrary_prefix = true\npresets = false\n')
    try:
        result = warm("--cache-dir", str(cache), "--config", str(config), "alpine:3.20")
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert claim.partial_path.read_bytes() == b"half a blob", "the proxy's fill is untouched"
    finally:
        claim.release()
    mark = upstream.log_mark()
    copy(proxy, "alpine:3.20", tmp / "pulled")
    assert_same_image(tmp / "pulled", alpine)
    assert upstream_gets(upstream, mark) == []
