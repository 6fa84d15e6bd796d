"""Cache-hit download throughput: dockerproxy serving a cached blob vs. nginx (sendfile).

Run from the project root with the project's venv:

    .venv/bin/python bench/cache_hit.py [--size 1GiB] [--runs 5] [--concurrency 32]

What it does (everything on 127.0.0.1, every process in its own process group and
stopped in a ``finally``, also on Ctrl-C / SIGTERM; the machinery is bench/common.py):

1. starts docker-registry (access log on) with one large pseudo-random blob in the
   public repository ``bench/blob``, and dockerproxy WITH its cache (``--cache-dir``
   in the temp dir, ``--cache-max-size`` large enough, ``--log-format json``) in front;
2. warms the cache with one full GET through the proxy, waits for the committed file
   ``<cache-dir>/blobs/sha256/<hex[:2]>/<hex>``, and checks that a second GET is a cache
   hit: the proxy's JSON access log says ``"cache": "hit"`` and the registry's access
   log shows no further blob GET (both are checked again at the end, for every GET);
3. starts nginx (``worker_processes 1``, ``sendfile on``, ``tcp_nopush on``,
   ``access_log off``) serving THE SAME FILE, the proxy's committed cache file, through
   an exact-match ``alias`` location at the same URL path;
4. downloads the blob with ``curl -o /dev/null`` from each, interleaved (nginx, proxy,
   nginx, ...) after a warm-up round, and reports the median / min / max MB/s
   (MB = 10^6 bytes), the ratio proxy / nginx and the CPU each server used;
5. pulls the blob ``--concurrency`` times at once (separate curl processes) from nginx
   and then from the proxy: every pull must end with 200 and the full size; reports the
   aggregate MB/s, the server CPU and the proxy's RSS: VmHWM before and after, and
   VmRSS sampled every 50 ms during the pulls;
6. prints a markdown table and machine info, and writes bench/results/cache_hit.json;
7. ``--profile`` then records one cache-hit download with py-spy.

``--proxy-src DIR`` runs dockerproxy from another source tree (DIR/dockerproxy first on
PYTHONPATH), so two versions of the serving code can be compared.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import proxies
from measuring import (
    Target,
    concurrent_pulls,
    curl_download,
    measure_rounds,
    print_heading,
    print_table,
    settle,
    summarize,
)
from processes import Proc, Procs
from proxies import access_events, start_caching_proxy
from pyspy import profile_downloads
from registry import MiB
from report import finish_report
from runner import Bench, add_common_args, run_bench
from sysstats import RSSSampler, proc_status_kb

# -- nginx ----------------------------------------------------------------------------------

NGINX_HTTP = """\
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    sendfile_max_chunk {sendfile_max_chunk};
    output_buffers 2 1m;  # only used where sendfile cannot be
    keepalive_timeout 65s;
    types {{ }}
    default_type application/octet-stream;

    server {{
        listen 127.0.0.1:{port};
        location = /v2/ {{
            return 200 "{{}}";
        }}
        location = {path} {{
            alias {file};
        }}
    }}"""


def start_nginx(
    procs: Procs, work: Path, path: str, file: Path, sendfile_max_chunk: str
) -> tuple[Proc, int]:
    """nginx serving the proxy's cached blob file from disk with sendfile."""

    def http(port: int) -> str:
        return NGINX_HTTP.format(
            port=port, path=path, file=file, sendfile_max_chunk=sendfile_max_chunk
        )

    return proxies.start_nginx(
        procs,
        work,
        "nginx",
        http,
        "1",
        "nginx serving the proxy's cached blob file from disk (written by bench/cache_hit.py).",
    )


# -- logs: is it really a cache hit? --------------------------------------------------------


def registry_blob_gets(registry: Proc, path: str) -> int:
    """Blob GETs in docker-registry's access log (combined log format)."""
    pattern = re.compile(r'"GET ' + re.escape(path) + r" HTTP/")
    return len(pattern.findall(registry.log_path.read_text(errors="replace")))


def wait_for_file(path: Path, size: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size == size:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the proxy did not commit {path} ({size} bytes)")


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(
        p, json_name="cache_hit.json", profiled="cache-hit", profile_prefix="cache_hit_profile"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="concurrent pulls for the RSS measurement; 0 skips it (default 32)",
    )
    p.add_argument(
        "--sendfile-max-chunk",
        default="2m",
        help="nginx sendfile_max_chunk (default 2m, nginx's own default since "
        "1.21.4; 0 means no limit)",
    )
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.concurrency < 0:
        p.error("--concurrency must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args,
        run,
        prefix="dockerproxy-cachehit-",
        tools=("curl", "nginx", "docker-registry"),
        access_log=True,
    )


def run(bench: Bench) -> int:
    args, procs, work, registry = bench.args, bench.procs, bench.work, bench.registry
    path = registry.blob_path()
    hexdigest = registry.digests[0]

    cache_dir = work / "cache"
    proxy, proxy_port = start_caching_proxy(
        procs, work, registry.port, args, cache_dir, max(2 * args.size, 1024 * MiB) // MiB
    )
    proxy_url = f"http://127.0.0.1:{proxy_port}{path}"

    # Warm the cache: one GET fills it (a miss), the next one must be a hit.
    r = curl_download(proxy_url, args.size, args.timeout)
    blob_file = cache_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest
    wait_for_file(blob_file, args.size)
    fills = registry_blob_gets(registry.proc, path)
    print(
        f"cache filled through the proxy at {float(r['mb_s']):.0f} MB/s "  # type: ignore[arg-type]
        f"({fills} blob GET upstream): {blob_file}",
        flush=True,
    )
    curl_download(proxy_url, args.size, args.timeout)
    events = access_events(proxy, path)
    if [e.get("cache") for e in events] != ["miss", "hit"]:
        raise RuntimeError(
            f"expected a miss then a hit in the proxy's access log, got "
            f"{[(e.get('cache'), e.get('status')) for e in events]}"
        )
    if registry_blob_gets(registry.proc, path) != fills:
        raise RuntimeError("the second GET through the proxy reached the registry")
    print('second GET: "cache": "hit" in the proxy\'s access log, no blob GET upstream', flush=True)

    nginx, nginx_port = start_nginx(procs, work, path, blob_file, args.sendfile_max_chunk)
    targets = [
        Target(
            "nginx",
            nginx_port,
            nginx.pid,
            f"sendfile, sendfile_max_chunk {args.sendfile_max_chunk}, 1 worker",
        ),
        Target("proxy", proxy_port, proxy.pid, "dockerproxy, cache hit"),
    ]
    rss_start_kb = proc_status_kb(proxy.pid, "VmRSS") or 0
    sampler = RSSSampler(proxy.pid)
    sampler.start()
    try:
        measure_rounds(targets, path, args, registry.proc.pid, args.warmup + args.runs)
    finally:
        sampler.stop()
    hwm_single_kb = proc_status_kb(proxy.pid, "VmHWM") or 0

    nginx_median = statistics.median(float(r["mb_s"]) for r in targets[0].results)  # type: ignore[arg-type]
    rows = [summarize(t, nginx_median) for t in targets]
    result = bench.results_head()
    result["nginx_sendfile_max_chunk"] = args.sendfile_max_chunk
    result["targets"] = rows
    result["proxy_rss_mb_single"] = single = {
        "at_start": round(rss_start_kb / 1024, 1),
        "peak_sampled": round(sampler.peak_kb / 1024, 1),
        "vmhwm": round(hwm_single_kb / 1024, 1),
    }

    concurrent: list[dict[str, object]] = []
    if args.concurrency:
        for target in targets:
            settle(args.quiet_wait)
            url = f"http://127.0.0.1:{target.port}{path}"
            c = concurrent_pulls(
                target,
                url,
                args.concurrency,
                args.size,
                args.timeout,
                proxy.pid if target.name == "proxy" else None,
            )
            print(
                f"{args.concurrency} concurrent pulls from {target.name}: "
                f"{c['aggregate_mb_s']} MB/s aggregate in {c['seconds']}s, server "
                f"{c['server_cpu_cores']} cores"
                + (f", proxy RSS {c['rss_mb']}" if "rss_mb" in c else ""),
                flush=True,
            )
            concurrent.append(c)
    result["concurrent"] = concurrent

    # Every GET through the proxy after the first was a hit; the registry saw one.
    events = access_events(proxy, path)
    statuses = dict(Counter(str(e.get("cache")) for e in events))
    expected_gets = 2 + (args.warmup + args.runs) + args.concurrency
    if (
        len(events) != expected_gets
        or events[0].get("cache") != "miss"
        or any(e.get("cache") != "hit" for e in events[1:])
        or any(e.get("bytes") != args.size for e in events)
    ):
        raise RuntimeError(
            f"proxy access log: {len(events)} GETs ({statuses}), "
            f"expected {expected_gets}: 1 miss then hits of "
            f"{args.size} bytes each"
        )
    upstream_gets = registry_blob_gets(registry.proc, path)
    if upstream_gets != fills:
        raise RuntimeError(f"the registry saw {upstream_gets - fills} more blob GETs")
    result["checks"] = {
        "proxy_gets": len(events),
        "proxy_cache": statuses,
        "proxy_logged_bytes_ok": True,
        "registry_blob_gets": upstream_gets,
    }

    if args.profile:
        result["profile"] = profile_downloads(procs, work, proxy.pid, proxy_url, args)

    print_heading("Cache-hit download throughput", args)
    print_table(rows)
    print()
    print(
        "Both serve the same file (the proxy's committed cache file, in the page cache); "
        "nginx: worker_processes 1, sendfile on, tcp_nopush on, sendfile_max_chunk "
        f"{args.sendfile_max_chunk}. registry CPU ~0: no request reached the upstream."
    )
    print(f"**proxy / nginx = {rows[1]['ratio_to_nginx']:.2f}** (median MB/s)")
    print(
        f"dockerproxy RSS, single downloads: {single['at_start']} MB at start, "
        f"VmHWM {single['vmhwm']} MB"
    )
    if concurrent:
        print()
        print(
            f"### {args.concurrency} concurrent pulls of the cached blob "
            f"(separate curl processes, all complete with 200 and {args.size} bytes)"
        )
        print()
        print(
            "| target | aggregate MB/s | per pull MB/s (median / min) | seconds "
            "| server CPU (cores) | server CPU s/GB | proxy VmHWM before -> after "
            "| proxy VmRSS peak (sampled) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for c in concurrent:
            rss = c.get("rss_mb")
            hwm = (
                f"{rss['vmhwm_before']} -> {rss['vmhwm_after']} MB"  # type: ignore[index]
                if rss
                else "-"
            )
            peak = f"{rss['vmrss_peak_sampled']} MB" if rss else "-"  # type: ignore[index]
            print(
                f"| {c['target']} | {c['aggregate_mb_s']:.0f} "
                f"| {c['per_pull_mb_s_median']:.0f} / {c['per_pull_mb_s_min']:.0f} "
                f"| {c['seconds']} | {c['server_cpu_cores']} | {c['server_cpu_s_per_gb']} "
                f"| {hwm} | {peak} |"
            )
    print()
    print(
        f"checks: {len(events)} GETs through the proxy, cache {statuses}, each logged "
        f"with {args.size} bytes; {upstream_gets} blob GET reached the registry (the fill)"
    )
    print()
    finish_report(bench.info, result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
