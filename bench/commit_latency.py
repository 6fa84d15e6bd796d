"""Cached-manifest latency while a large blob fill commits (its fsync).

Run from the project root with the project's venv:

    .venv/bin/python bench/commit_latency.py [--size 1GiB] [--runs 3] [--rate 200]
    .venv/bin/python bench/commit_latency.py --proxy-src /tmp/old-tree   # another version

Everything on 127.0.0.1, every process in its own process group and stopped in a
``finally`` (the machinery is bench/runner.py and the modules it names):

1. docker-registry with ``--runs`` pseudo-random blobs and one small manifest (pushed
   over its API), then ``sync``: the only dirty pages later are the proxy's;
2. nginx in front of it sending at most ``--upstream-rate`` per connection
   (``limit_rate``; default 100m, a fast real upstream; 0 for none). A fill at
   loopback speed keeps the proxy's one thread busy copying for its whole length and
   the requests queued behind that spill into the commit; at a real upstream's rate
   the commit shows alone. The blob's pages stay dirty until the commit either way
   (the kernel writes back after 30 s, or past 10% of memory);
3. dockerproxy with its cache (fsync on, as by default), and the manifest by digest
   GET twice through it: a miss, then a hit;
4. per run: a client process sends GETs of that manifest on one keep-alive connection,
   due ``--rate`` times a second, while curl pulls one blob through the proxy (a cold
   fill). A watcher polls the cache directory every millisecond: the fill's partial
   file complete, then the blob renamed under ``blobs/``; between the two the proxy
   flushes it to the disk and renames it (the commit);
5. latency is counted from each request's due time, so requests stuck behind a
   stalled one count too (no coordinated omission); service time from its send, what
   the proxy took without the client's own lateness. Their p50 / p99 / max are
   printed for the requests due before the fill, during it and during the commit;
6. every manifest GET of the stream must be logged as a cache hit answered 200;
   the results go to bench/results/commit_latency.json.

``--proxy-src DIR`` runs dockerproxy from another source tree (DIR/dockerproxy first on
PYTHONPATH), e.g. the code before a change: ``git archive <commit> dockerproxy | tar -x
-C DIR``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from latency import RequestStream, Sample, brief, cells, summary
from measuring import curl_argv, settle
from processes import Proc
from proxies import access_events, start_caching_proxy, start_nginx
from registry import OCI_MANIFEST, REPO, MiB, push_manifest
from report import finish_report
from runner import Bench, add_common_args, run_bench

PHASES = ("before", "fill", "commit")

NGINX_HTTP = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_max_temp_file_size 0;
            limit_rate {rate};
        }}
    }}"""


# -- the commit window ----------------------------------------------------------------------


class CommitWatcher(threading.Thread):
    """Polls the cache directory: when the fill's partial is complete, when it is committed."""

    def __init__(self, cache_dir: Path, hexdigest: str, size: int) -> None:
        super().__init__(daemon=True)
        self.tmp = cache_dir / "tmp"
        self.target = cache_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest
        self.size = size
        self.written: float | None = None
        self.committed: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set() and self.committed is None:
            now = time.monotonic()
            if self.target.exists():
                self.committed = now
                if self.written is None:
                    self.written = now
                return
            if self.written is None and self._partial_complete():
                self.written = now
            time.sleep(0.001)

    def _partial_complete(self) -> bool:
        try:
            return any(
                entry.name.startswith("fill-") and entry.stat().st_size >= self.size
                for entry in os.scandir(self.tmp)
            )
        except OSError:
            return False

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def one_run(
    port: int,
    manifest_path: str,
    blob_path: str,
    cache_dir: Path,
    hexdigest: str,
    args: argparse.Namespace,
) -> dict[str, object]:
    """A cold fill of one blob under a stream of manifest requests; the samples by phase."""
    stream = RequestStream(port, manifest_path, args.rate, {"accept": OCI_MANIFEST})
    watcher = CommitWatcher(cache_dir, hexdigest, args.size)
    stream.start()
    time.sleep(args.lead)
    fill_started = time.monotonic()
    watcher.start()
    curl = subprocess.run(
        curl_argv(f"http://127.0.0.1:{port}{blob_path}", "%{http_code} %{size_download}"),
        capture_output=True,
        text=True,
        timeout=args.timeout,
        check=False,
    )
    deadline = time.monotonic() + 60
    while watcher.committed is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(args.lead)
    stream.stop()
    watcher.stop()
    if stream.error is not None:
        raise RuntimeError(f"manifest stream failed: {stream.error}")
    if curl.stdout.split() != ["200", str(args.size)]:
        raise RuntimeError(f"curl: {curl.stdout!r} {curl.stderr!r}")
    if watcher.written is None or watcher.committed is None:
        raise RuntimeError("the proxy did not commit the blob")
    phases: dict[str, list[Sample]] = {phase: [] for phase in PHASES}
    for sample in stream.samples:
        if sample.status != 200:
            raise RuntimeError(f"a manifest GET answered {sample.status}")
        if sample.scheduled < fill_started:
            phases["before"].append(sample)
        elif sample.scheduled < watcher.written:
            phases["fill"].append(sample)
        elif sample.scheduled < watcher.committed:
            phases["commit"].append(sample)
    return {
        "fill_s": round(watcher.written - fill_started, 3),
        "fill_mb_s": round(args.size / (watcher.written - fill_started) / 1e6),
        "commit_s": round(watcher.committed - watcher.written, 3),
        "requests": len(stream.samples),
        "samples": phases,
    }


# -- reporting ------------------------------------------------------------------------------


def access_hits(proxy: Proc, path: str) -> tuple[int, int]:
    """(cache hits answered 200, all GETs) of C{path} in the proxy's JSON access log."""
    events = access_events(proxy, path)
    return sum(e.get("cache") == "hit" and e.get("status") == 200 for e in events), len(events)


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(
        p,
        json_name="commit_latency.json",
        runs=3,
        runs_help="cold fills, one blob each",
        warmup=False,
    )
    p.add_argument(
        "--rate", type=float, default=200.0, help="manifest requests per second (default 200)"
    )
    p.add_argument(
        "--upstream-rate",
        default="100m",
        help="nginx limit_rate between the proxy and the registry, e.g. 100m "
        "(MiB/s), 500m; 0: the proxy fetches from the registry directly "
        "(default 100m)",
    )
    p.add_argument(
        "--lead",
        type=float,
        default=1.0,
        help="seconds of stream before each fill and after its commit (default 1)",
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.rate <= 0:
        p.error("--runs must be at least 1 and --rate positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nginx = ("nginx",) if args.upstream_rate != "0" else ()
    return run_bench(
        args,
        run,
        prefix="dockerproxy-commit-",
        tools=("curl", "docker-registry", *nginx),
        blobs=args.runs,
    )


def run(bench: Bench) -> int:
    args, procs, work = bench.args, bench.procs, bench.work
    blobs, registry_port = bench.registry.digests, bench.registry.port
    manifest = push_manifest(registry_port, blobs[0], args.size)
    os.sync()  # the registry's blobs are on the disk: later dirty pages are the proxy's
    print(f"manifest {manifest} in the registry", flush=True)
    upstream_port = registry_port
    if args.upstream_rate != "0":
        _, upstream_port = start_nginx(
            procs,
            work,
            "nginx",
            lambda port: NGINX_HTTP.format(
                port=port, upstream=registry_port, rate=args.upstream_rate
            ),
            comment="the registry at most --upstream-rate per connection "
            "(written by bench/commit_latency.py)",
        )

    cache_dir = work / "cache"
    proxy, port = start_caching_proxy(
        procs, work, upstream_port, args, cache_dir, (args.runs + 1) * args.size // MiB + 64
    )
    manifest_path = f"/v2/{REPO}/manifests/{manifest}"
    for _ in range(2):  # a miss, then a hit
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", manifest_path, headers={"accept": OCI_MANIFEST})
        conn.getresponse().read()
        conn.close()
    if access_hits(proxy, manifest_path) != (1, 2):
        raise RuntimeError(f"expected a miss then a hit: {access_hits(proxy, manifest_path)}")

    runs = []
    for i, hexdigest in enumerate(blobs):
        settle(args.quiet_wait)
        r = one_run(port, manifest_path, bench.registry.blob_path(i), cache_dir, hexdigest, args)
        phases = r["samples"]
        assert isinstance(phases, dict)
        print(
            f"run {i + 1}/{args.runs}: fill {r['fill_s']}s ({r['fill_mb_s']} MB/s), "
            f"commit {r['commit_s']}s; "
            + "; ".join(f"{phase} {brief(summary(phases[phase]))}" for phase in PHASES),
            flush=True,
        )
        runs.append(r)

    hits, total = access_hits(proxy, manifest_path)
    if hits != total - 1:
        raise RuntimeError(f"{total - 1 - hits} of the stream's manifest GETs were not hits")
    pooled = {
        phase: [v for r in runs for v in r["samples"][phase]]  # type: ignore[index]
        for phase in PHASES
    }
    rows = {phase: summary(pooled[phase]) for phase in PHASES}
    print()
    print(
        f"## Cached manifest by digest, {args.rate:g}/s, during a cold {args.size / MiB:.0f} "
        f"MiB fill at upstream rate {args.upstream_rate} ({args.runs} runs; latency from "
        f"each request's scheduled time, service time from its send)"
    )
    print()
    print(
        f"code: {args.proxy_src or 'installed package'}"
        + (f"; label: {args.label}" if args.label else "")
    )
    print(
        f"commit (fsync + rename) took {', '.join(str(r['commit_s']) for r in runs)} s; "
        f"fill {', '.join(str(r['fill_s']) for r in runs)} s "
        f"({', '.join(str(r['fill_mb_s']) for r in runs)} MB/s)"
    )
    print()
    print("| requests scheduled | n | latency p50 ms | p99 | max | service p50 ms | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for phase in PHASES:
        row, lat, svc = rows[phase], rows[phase].get("latency", {}), rows[phase].get("service", {})
        assert isinstance(lat, dict) and isinstance(svc, dict)
        print(f"| {phase} | {row['n']} | {cells(lat)} | {cells(svc)} |")
    print()
    result = bench.results_head() | {
        "rate": args.rate,
        "upstream_rate": args.upstream_rate,
        "phases": rows,
        "stream_hits": hits,
        "per_run": [
            {k: v for k, v in r.items() if k != "samples"}
            | {
                "phases": {
                    p: summary(r["samples"][p])  # type: ignore[index]
                    for p in PHASES
                }
            }
            for r in runs
        ],
    }
    finish_report(bench.info, result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
