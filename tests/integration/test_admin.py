"""The admin listener end to end: a real dockerproxy in front of a real registry, pulled
through by skopeo, watched on --admin-listen: /metrics, /healthz, /readyz, /status.json and
its history over a restart, the access log's fields, and a public admin port refused."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from tests.harness import web
from tests.harness.caching import mirror_of
from tests.harness.metrics import sample
from tests.harness.ports import HOST, free_port
from tests.harness.proxy import ProxyProcess, StartProxy, run_twistd
from tests.harness.pulls import copy
from tests.harness.upstream import Upstream


def admin_proxy(
    start_proxy: StartProxy, upstream: Upstream, cache: Path, port: int
) -> ProxyProcess:
    return mirror_of(
        start_proxy, upstream.url, cache, "--admin-listen", f"tcp:{port}:interface={HOST}"
    )


def test_pulls_show_in_metrics_status_and_the_log(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    port = free_port()
    admin = f"http://{HOST}:{port}"
    proxy = admin_proxy(start_proxy, upstream, tmp / "cache", port)
    registry = urlsplit(upstream.url).netloc  # an --upstream URL's registry name
    copy(proxy, "alpine:3.20", tmp / "cold")
    copy(proxy, "alpine:3.20", tmp / "warm")

    assert web.request("GET", f"{admin}/healthz").body == b"ok\n"
    ready = web.request("GET", f"{admin}/readyz")
    assert ready.status == 200, ready
    assert ready.json() == {
        "ready": True,
        "checks": {"draining": "ok", "cache": "ok", "upstream": "ok"},
    }

    metrics = web.request("GET", f"{admin}/metrics").body.decode()
    assert (
        sample(metrics, "dockerproxy_requests_total", method="GET", route="tag", status="200") == 2
    )
    blobs = sample(metrics, "dockerproxy_cache_requests_total", kind="blob", result="hit")
    assert blobs >= 2 and blobs == sample(
        metrics, "dockerproxy_cache_requests_total", kind="blob", result="miss"
    )
    assert (
        sample(metrics, "dockerproxy_upstream_requests_total", registry=registry, status="200") > 0
    )
    assert (
        sample(metrics, "dockerproxy_upstream_requests_total", registry=registry, status="401") > 0
    )
    assert sample(metrics, "dockerproxy_cache_blobs") == blobs
    assert sample(metrics, "dockerproxy_cache_size_bytes") > 0
    assert sample(metrics, "dockerproxy_upstream_response_bytes_total", registry=registry) > 0

    status = web.request("GET", f"{admin}/status.json").json()
    day = status["last_24h"]
    assert day["requests"] == sum(v for v in status["minutes"]["requests"] if v)
    assert 0.3 < day["cache_hit_ratio"] < 0.7, day  # the warm pull hit what the cold one missed
    assert day["served_bytes"] > day["upstream_bytes"] > 0
    [top] = status["top_images"]["by_pulls"]
    assert top["image"] == f"{registry}/library/alpine" and top["pulls"] == 2, top
    assert status["cache"]["blobs"] == blobs
    assert [u["registry"] for u in status["upstreams"]] == [registry]

    response = web.request("GET", f"{proxy.url}/v2/")
    request_id = response.header("x-request-id")
    assert request_id and re.fullmatch(r"[0-9a-f]{16}", request_id)
    [event] = [e for e in proxy.access_events() if e["request_id"] == request_id]
    assert (event["client"], event["method"], event["path"], event["status"]) == (
        HOST,
        "GET",
        "/v2/",
        401,
    )
    assert (event["upstream"], event["upstream_status"], event["route"]) == (
        upstream.url,
        401,
        "ping",
    )
    assert all("request_id" in e and "user" in e and "ns" in e for e in proxy.access_events())


def test_the_history_survives_a_restart(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    port = free_port()
    admin = f"http://{HOST}:{port}"
    proxy = admin_proxy(start_proxy, upstream, tmp / "cache", port)
    copy(proxy, "alpine:3.20", tmp / "pulled")
    before = web.request("GET", f"{admin}/status.json").json()
    assert before["last_24h"]["requests"] > 0
    assert proxy.proc.stop() == 0, "a graceful stop, which writes the history"
    assert (tmp / "cache" / "status-history.json").is_file()

    again = admin_proxy(start_proxy, upstream, tmp / "cache", port)
    after = web.request("GET", f"{admin}/status.json").json()
    # The restarted proxy answered the harness's check that it serves (/): more requests,
    # but the same pulls.
    assert after["last_24h"]["requests"] > before["last_24h"]["requests"]
    for key in ("cache_lookups", "cache_hits", "upstream_bytes"):
        assert after["last_24h"][key] == before["last_24h"][key], key
    assert after["top_images"] == before["top_images"]
    assert after["top_images"]["by_pulls"][0]["pulls"] == 1
    again.stop()


def unreachable(*extra: str) -> list[str]:
    """A proxy that never reaches an upstream, on a free loopback port, and C{extra}: for
    the admin side's refusals, which come before anything is served."""
    registry = ["--no-presets", "--registry", f"x.test=http://{HOST}:9", "--no-cache"]
    return [*registry, "--listen", f"tcp:{free_port()}:interface={HOST}", *extra]


def test_an_admin_port_beyond_loopback_without_admins_is_refused(tmp: Path) -> None:
    """No port is opened on all interfaces: the proxy stops before it listens."""
    port = free_port()
    status, stderr = run_twistd(tmp, unreachable("--admin-listen", f"tcp:{port}"))
    assert status == 2, stderr
    assert stderr.splitlines() == [
        f"dockerproxy: --admin-listen: 'tcp:{port}' listens beyond loopback: it needs admins "
        "([auth] admins), or an interface such as interface=127.0.0.1"
    ]


def test_an_admin_port_in_use_is_named(tmp: Path, start_proxy: StartProxy) -> None:
    taken = start_proxy("--no-presets", "--registry", f"x.test=http://{HOST}:9", "--no-cache")
    admin = f"tcp:{taken.port}:interface={HOST}"
    status, stderr = run_twistd(tmp, unreachable("--admin-listen", admin))
    assert status == 2, stderr
    assert stderr.startswith(
        f"dockerproxy: --admin-listen: cannot listen on 'tcp:{taken.port}:interface={HOST}': "
    ), stderr
