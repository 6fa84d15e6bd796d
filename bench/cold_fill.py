"""Cold-pull throughput: dockerproxy filling its cache vs. a tuned nginx relay and
distribution's own pull-through cache.

Run from the project root with the project's venv:

    .venv/bin/python bench/cold_fill.py [--size 1GiB] [--runs 3] [--proxy-src DIR]

What it does (everything on 127.0.0.1, every process in its own process group and
stopped in a ``finally``, also on Ctrl-C / SIGTERM; the machinery is bench/runner.py):

1. starts docker-registry with one large pseudo-random blob in ``bench/blob`` (the
   upstream), and nginx in front of it, tuned as in bench/throughput.py, twice
   (``proxy_buffering`` on and off; the faster one of each round's medians is the
   reference);
2. each round downloads the blob with ``curl -o /dev/null``, interleaved, from:
   docker-registry directly; each nginx; a dockerproxy started for this one download
   with an EMPTY cache directory (``--cache-dir``, fsync on as by default), so the
   download is the cold fill, its last byte sent once the blob is verified and
   committed; and docker-registry configured as a pull-through cache
   (``proxy: remoteurl:``) of the upstream, also started with empty storage;
3. checks that each dockerproxy logged the GET as a cache miss and committed the blob
   (``<cache-dir>/blobs/sha256/<hex[:2]>/<hex>``, the full size), reads its VmHWM (peak
   RSS) and the CPU its main thread (the reactor, which serves every connection) used
   for the download before stopping it, and deletes each cold cache directory;
4. prints the medians as a markdown table (ratio to the reference nginx), the proxy's
   peak RSS (median and max over its rounds), its main thread's CPU seconds per GB and
   the load average, and writes
   bench/results/cold_fill.json.

``--proxy-src DIR`` runs dockerproxy from another source tree; ``--base-src DIR`` adds a
second cold dockerproxy from DIR to the same rounds (target ``proxy-cold-base``), e.g. the
code before a change (``git archive main dockerproxy | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import proxies
from measuring import Target, measure, print_heading, print_table, settle, summarize
from processes import Proc, Procs, free_port, wait_http
from report import finish_report
from runner import Bench, add_common_args, run_bench
from sysstats import main_thread_cpu_s, proc_status_kb
from throughput import start_nginx

ALL_TARGETS = ("direct", "nginx-buffered", "nginx-unbuffered", "proxy-cold", "distribution-cold")


def start_distribution_cache(procs: Procs, work: Path, upstream_port: int) -> tuple[Proc, int]:
    """docker-registry as a pull-through cache of the upstream, its storage in C{work}."""
    storage = work / "storage"
    storage.mkdir(parents=True)
    port = free_port()
    config = {
        "version": "0.1",
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "maintenance": {"uploadpurging": {"enabled": False}},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "bench-http-secret"},
        "proxy": {"remoteurl": f"http://127.0.0.1:{upstream_port}"},
    }
    config_path = work / "distribution.yml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    proc = procs.start(Proc("distribution", ["docker-registry", "serve", config_path], work))
    wait_http(port, "/v2/", proc)
    return proc, port


def cold_round(
    target: Target,
    start: Callable[[Path], tuple[Proc, int]],
    work: Path,
    check: Callable[[Proc, Path], None],
    bench: Bench,
    path: str,
    round_no: int,
) -> dict[str, object]:
    """One download from a server started for it with empty storage, then stopped."""
    args = bench.args
    d = work / f"{target.name}-{round_no}"
    d.mkdir()
    proc, port = start(d)
    try:
        target.port, target.pgid = port, proc.pid
        settle(args.quiet_wait)
        reactor0 = main_thread_cpu_s(proc.pid)
        r = measure(target, path, args.size, bench.registry.proc.pid, args.timeout)
        r["main_thread_cpu_s"] = round(main_thread_cpu_s(proc.pid) - reactor0, 2)
        check(proc, d)
        r["vmhwm_mb"] = round((proc_status_kb(proc.pid, "VmHWM") or 0) / 1024, 1)
    finally:
        proc.stop()
        bench.procs.procs.remove(proc)
        for data in (d / "cache", d / "storage"):  # the blob; the logs stay until the end
            shutil.rmtree(data, ignore_errors=True)
    return r


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p, json_name="cold_fill.json", runs=3)
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma-separated subset of {','.join(ALL_TARGETS)}",
    )
    p.add_argument(
        "--base-src",
        type=lambda text: Path(text).resolve(),
        metavar="DIR",
        default=None,
        help="also time a cold fill by dockerproxy from DIR/dockerproxy (target "
        "proxy-cold-base, in the same rounds), e.g. the code before a change",
    )
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in args.targets:
        if t not in ALL_TARGETS:
            p.error(f"unknown target {t!r}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args, run, prefix="dockerproxy-coldfill-", tools=("curl", "nginx", "docker-registry")
    )


def run(bench: Bench) -> int:
    args, procs, work, registry = bench.args, bench.procs, bench.work, bench.registry
    path = registry.blob_path()
    hexdigest = registry.digests[0]
    load_start = os.getloadavg()
    warm: list[Target] = []
    if "direct" in args.targets:
        warm.append(Target("direct", registry.port, registry.proc.pid, "docker-registry"))
    for name, buffering in (("nginx-buffered", True), ("nginx-unbuffered", False)):
        if name in args.targets:
            ng, port = start_nginx(procs, work, name, registry.port, buffering, "1")
            note = f"relay, proxy_buffering {'on' if buffering else 'off'}"
            warm.append(Target(name, port, ng.pid, note))

    def proxy_check(proxy: Proc, d: Path) -> None:
        events = proxies.access_events(proxy, path)
        if [e.get("cache") for e in events] != ["miss"]:
            raise RuntimeError(f"expected one cache miss, got {events}")
        blob = d / "cache" / "blobs" / "sha256" / hexdigest[:2] / hexdigest
        if not blob.exists() or blob.stat().st_size != args.size:
            raise RuntimeError(f"the proxy did not commit {blob}")

    def proxy_from(src: Path | None) -> Callable[[Path], tuple[Proc, int]]:
        options = argparse.Namespace(**{**vars(args), "proxy_src": src})
        cache_mib = max(2 * args.size, 1024 * 1024 * 1024) // (1024 * 1024)
        return lambda d: proxies.start_caching_proxy(
            procs, d, registry.port, options, d / "cache", cache_mib
        )

    cold: list[tuple[Target, Callable[[Path], tuple[Proc, int]], Callable[[Proc, Path], None]]] = []
    if "proxy-cold" in args.targets:
        cold.append(
            (
                Target("proxy-cold", 0, 0, "dockerproxy, empty cache"),
                proxy_from(args.proxy_src),
                proxy_check,
            )
        )
    if args.base_src is not None:
        base = Target("proxy-cold-base", 0, 0, f"dockerproxy from {args.base_src}")
        cold.append((base, proxy_from(args.base_src), proxy_check))
    if "distribution-cold" in args.targets:
        cold.append(
            (
                Target("distribution-cold", 0, 0, "docker-registry proxy: remoteurl, empty"),
                lambda d: start_distribution_cache(procs, d, registry.port),
                lambda proc, d: None,
            )
        )

    width = max(len(t.name) for t in [*warm, *(c[0] for c in cold)])
    for i in range(args.warmup + args.runs):
        tag = "warm-up" if i < args.warmup else f"run {i - args.warmup + 1}/{args.runs}"
        for target in warm:
            settle(args.quiet_wait)
            r = measure(target, path, args.size, registry.proc.pid, args.timeout)
            report_line(tag, target.name, width, r)
            if i >= args.warmup:
                target.results.append(r)
        for target, start, check in cold:
            r = cold_round(target, start, work, check, bench, path, i)
            report_line(tag, target.name, width, r)
            if i >= args.warmup:
                target.results.append(r)
    load_end = os.getloadavg()

    nginx = [
        statistics.median(float(r["mb_s"]) for r in t.results) for t in warm if "nginx" in t.name
    ]  # type: ignore[arg-type]
    reference = max(nginx, default=None)
    targets = [*warm, *(c[0] for c in cold)]
    rows = [summarize(t, reference) for t in targets]
    result = bench.results_head()
    result["targets"] = rows
    result["load_average"] = {"start": load_start, "end": load_end}
    rss: dict[str, dict[str, float]] = {}
    for target, _, _ in cold:
        peaks = [float(r["vmhwm_mb"]) for r in target.results]  # type: ignore[arg-type]
        main = [
            float(r["main_thread_cpu_s"]) / (int(r["bytes"]) / 1e9)  # type: ignore[arg-type, call-overload]
            for r in target.results
        ]
        rss[target.name] = {
            "median": statistics.median(peaks),
            "max": max(peaks),
            "main_thread_cpu_s_per_gb": round(statistics.median(main), 2),
        }
    result["peak_rss"] = rss

    print_heading("Cold pull: filling the cache vs. relaying", args)
    print_table(rows)
    print()
    print(
        "ratio to nginx: the faster nginx relay (median). proxy-cold: a fresh dockerproxy "
        "per download, empty cache, fsync on; its last byte waits for the commit."
    )
    for name, peak in rss.items():
        print(
            f"{name}: peak RSS (VmHWM) median {peak['median']} MB, max {peak['max']} MB; "
            f"main thread CPU {peak['main_thread_cpu_s_per_gb']} s/GB"
        )
    print(
        "load average at start "
        + " ".join(f"{x:.2f}" for x in load_start)
        + ", at end "
        + " ".join(f"{x:.2f}" for x in load_end)
    )
    print()
    finish_report(bench.info, result, args)
    return 0


def report_line(tag: str, name: str, width: int, r: dict[str, object]) -> None:
    extra = (
        f"  VmHWM {r['vmhwm_mb']} MB  main thread {r['main_thread_cpu_s']}s CPU"
        if "vmhwm_mb" in r
        else ""
    )
    print(
        f"{tag:>9} {name:<{width}} {float(r['mb_s']):8.1f} MB/s  "  # type: ignore[arg-type]
        f"{float(r['seconds']):6.2f}s  server {float(r['server_cores']):.2f} cores  "  # type: ignore[arg-type]
        f"registry {float(r['registry_cores']):.2f}  other {r['foreign_cores']} cores{extra}",  # type: ignore[arg-type]
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
