"""Measured downloads: curl fetching a blob from a target while the CPU of the serving
processes, of the registry and of the rest of the machine is counted; interleaved
rounds of them, concurrent pulls, and their medians as a markdown table.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from registry import MiB
from sysstats import (
    CLK_TCK,
    RSSSampler,
    group_stats,
    proc_status_kb,
    system_busy_ticks,
    wait_for_quiet,
)

QUIET_CORES = 0.15  # the machine counts as idle below this many busy cores


@dataclass
class Target:
    name: str
    port: int
    pgid: int  # process group of the serving processes (for CPU accounting)
    note: str = ""
    results: list[dict[str, object]] = field(default_factory=list)
    scheme: str = "http"
    # More curl options (--http1.1 / --http2, a CA) and the HTTP version curl must report.
    curl_options: tuple[str, ...] = ()
    http_version: str | None = None


def curl_argv(url: str, write_out: str, options: Sequence[str] = ()) -> list[str]:
    """curl downloading C{url} to nowhere, printing only C{write_out} (C{-w})."""
    return ["curl", "-s", "--noproxy", "*", *options, "-o", "/dev/null", "-w", write_out, url]


def settle(quiet_wait: float) -> None:
    """Before a measurement: wait up to C{quiet_wait} s (0: not at all) for an idle machine."""
    if quiet_wait > 0:
        wait_for_quiet(QUIET_CORES, quiet_wait)


def curl_download(
    url: str,
    expected: int,
    timeout: float,
    options: Sequence[str] = (),
    http_version: str | None = None,
) -> dict[str, object]:
    """One download; C{http_version}: what curl must have spoken (C{1.1}, C{2})."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    write_out = "%{speed_download} %{size_download} %{http_code} %{time_total} %{http_version}"
    out = subprocess.run(
        curl_argv(url, write_out, options),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 5:
        raise RuntimeError(
            f"curl {url} failed (exit {out.returncode}): {out.stdout!r} {out.stderr!r}"
        )
    speed, size, code, total = float(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
    if code != 200 or size != expected:
        raise RuntimeError(
            f"curl {url}: status {code}, {size} bytes, expected 200 and {expected} bytes"
        )
    if http_version is not None and parts[4] != http_version:
        raise RuntimeError(f"curl {url}: HTTP/{parts[4]}, expected HTTP/{http_version}")
    curl_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "mb_s": speed / 1e6,
        "bytes": size,
        "status": code,
        "seconds": total,
        "curl_cpu_s": curl_cpu,
    }


def measure(
    target: Target, path: str, expected: int, registry_pgid: int, timeout: float
) -> dict[str, object]:
    u0, s0, f0 = group_stats(target.pgid)
    reg0 = sum(group_stats(registry_pgid)[:2])
    busy0 = system_busy_ticks()
    url = f"{target.scheme}://127.0.0.1:{target.port}{path}"
    r = curl_download(url, expected, timeout, target.curl_options, target.http_version)
    busy1 = system_busy_ticks()
    u1, s1, f1 = group_stats(target.pgid)
    reg1 = sum(group_stats(registry_pgid)[:2])
    seconds = float(r["seconds"]) or 1e-9  # type: ignore[arg-type]
    ours = (u1 - u0) + (s1 - s0) + float(r["curl_cpu_s"])  # type: ignore[arg-type]
    if target.pgid != registry_pgid:
        ours += reg1 - reg0
    # CPU used by anything else on the machine meanwhile (other jobs): a noisy run.
    r["foreign_cores"] = round(max(0.0, (busy1 - busy0) / CLK_TCK - ours) / seconds, 2)
    r["server_user_s"] = round(u1 - u0, 3)
    r["server_sys_s"] = round(s1 - s0, 3)
    r["server_minflt"] = f1 - f0
    r["server_cpu_s"] = round((u1 - u0) + (s1 - s0), 3)
    r["server_cores"] = ((u1 - u0) + (s1 - s0)) / seconds
    r["registry_cores"] = (reg1 - reg0) / seconds
    return r


def measure_rounds(
    targets: Sequence[Target], path: str, args: argparse.Namespace, registry_pgid: int, rounds: int
) -> None:
    """C{rounds} interleaved downloads from every target, warm-ups first and not kept.

    Interleaving spreads slow phases of the machine over all targets alike; each
    download first waits (up to C{--quiet-wait}) for the machine to be idle.
    """
    width = max(len(t.name) for t in targets)
    for i in range(rounds):
        warm = i < args.warmup
        for target in targets:
            settle(args.quiet_wait)
            r = measure(target, path, args.size, registry_pgid, args.timeout)
            tag = "warm-up" if warm else f"run {i - args.warmup + 1}/{args.runs}"
            print(
                f"{tag:>9} {target.name:<{width}} {float(r['mb_s']):8.1f} MB/s  "  # type: ignore[arg-type]
                f"{float(r['seconds']):6.2f}s  server {float(r['server_cores']):.2f} "  # type: ignore[arg-type]
                f"cores (user/sys {r['server_user_s']}/{r['server_sys_s']}s)  registry "
                f"{float(r['registry_cores']):.2f}  curl {float(r['curl_cpu_s']):.2f}s CPU  "  # type: ignore[arg-type]
                f"minflt {r['server_minflt']}  other {r['foreign_cores']} cores",
                flush=True,
            )
            if not warm:
                target.results.append(r)


def concurrent_pulls(
    target: Target, url: str, n: int, expected: int, timeout: float, rss_pid: int | None
) -> dict[str, object]:
    """C{n} curl processes pulling C{url} at once; every one must get 200 and C{expected}."""
    hwm_before = proc_status_kb(rss_pid, "VmHWM") if rss_pid else None
    rss_before = proc_status_kb(rss_pid, "VmRSS") if rss_pid else None
    sampler = RSSSampler(rss_pid) if rss_pid else None
    if sampler is not None:
        sampler.start()
    u0, s0, _ = group_stats(target.pgid)
    start = time.monotonic()
    curls = [
        subprocess.Popen(
            curl_argv(url, "%{http_code} %{size_download} %{speed_download}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outputs = []
    try:
        deadline = start + timeout
        for curl in curls:
            out, err = curl.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append((curl.returncode, out, err))
    finally:
        for curl in curls:
            if curl.poll() is None:
                curl.kill()
                curl.wait()
        if sampler is not None:
            sampler.stop()
    wall = time.monotonic() - start
    u1, s1, _ = group_stats(target.pgid)
    bad = [o for o in outputs if o[0] != 0 or o[1].split()[:2] != ["200", str(expected)]]
    if bad:
        raise RuntimeError(
            f"{len(bad)} of {n} concurrent pulls from {target.name} failed: {bad[:3]}"
        )
    speeds = [float(o[1].split()[2]) / 1e6 for o in outputs]
    result: dict[str, object] = {
        "target": target.name,
        "pulls": n,
        "all_complete": True,
        "seconds": round(wall, 2),
        "aggregate_mb_s": round(n * expected / wall / 1e6, 1),
        "per_pull_mb_s_median": round(statistics.median(speeds), 1),
        "per_pull_mb_s_min": round(min(speeds), 1),
        "server_cpu_cores": round((u1 - u0 + s1 - s0) / wall, 2),
        "server_cpu_s_per_gb": round((u1 - u0 + s1 - s0) / (n * expected / 1e9), 3),
    }
    if rss_pid:
        assert sampler is not None
        result["rss_mb"] = {
            "vmrss_before": round((rss_before or 0) / 1024, 1),
            "vmhwm_before": round((hwm_before or 0) / 1024, 1),
            "vmhwm_after": round((proc_status_kb(rss_pid, "VmHWM") or 0) / 1024, 1),
            "vmrss_peak_sampled": round(sampler.peak_kb / 1024, 1),
            "vmrss_after": round((proc_status_kb(rss_pid, "VmRSS") or 0) / 1024, 1),
            "samples": sampler.samples,
        }
    return result


def summarize(target: Target, reference: float | None) -> dict[str, object]:
    speeds = [float(r["mb_s"]) for r in target.results]  # type: ignore[arg-type]
    med = statistics.median(speeds)
    cores = statistics.median(float(r["server_cores"]) for r in target.results)  # type: ignore[arg-type]
    reg = statistics.median(float(r["registry_cores"]) for r in target.results)  # type: ignore[arg-type]
    gb = [int(r["bytes"]) / 1e9 for r in target.results]  # type: ignore[call-overload]
    cpu_per_gb = statistics.median(
        float(r["server_cpu_s"]) / g  # type: ignore[arg-type]
        for r, g in zip(target.results, gb, strict=True)
    )
    sys_share = statistics.median(
        float(r["server_sys_s"]) / max(float(r["server_cpu_s"]), 1e-9)  # type: ignore[arg-type]
        for r in target.results
    )
    minflt = statistics.median(int(r["server_minflt"]) for r in target.results)  # type: ignore[call-overload]
    return {
        "target": target.name,
        "note": target.note,
        "median_mb_s": round(med, 1),
        "server_cpu_s_per_gb": round(cpu_per_gb, 3),
        "server_sys_share": round(sys_share, 2),
        "server_minflt_median": minflt,
        "foreign_cores_max": max(float(r["foreign_cores"]) for r in target.results),  # type: ignore[arg-type]
        "min_mb_s": round(min(speeds), 1),
        "max_mb_s": round(max(speeds), 1),
        "ratio_to_nginx": round(med / reference, 3) if reference else None,
        "server_cpu_cores_median": round(cores, 2),
        "registry_cpu_cores_median": round(reg, 2),
        "runs": speeds,
    }


def print_table(rows: list[dict[str, object]]) -> None:
    print(
        "| target | median MB/s | min | max | ratio to nginx | server CPU (cores) "
        "| server CPU s/GB (% sys) | server minor faults | registry CPU (cores) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['ratio_to_nginx']:.2f}" if r["ratio_to_nginx"] is not None else "-"
        name = f"{r['target']}{' (' + str(r['note']) + ')' if r['note'] else ''}"
        print(
            f"| {name} | {r['median_mb_s']:.0f} | {r['min_mb_s']:.0f} | {r['max_mb_s']:.0f} "
            f"| {ratio} | {r['server_cpu_cores_median']:.2f} "
            f"| {r['server_cpu_s_per_gb']:.2f} ({100 * r['server_sys_share']:.0f}%) "
            f"| {r['server_minflt_median']:.0f} | {r['registry_cpu_cores_median']:.2f} |"
        )


def print_heading(title: str, args: argparse.Namespace) -> None:
    print()
    print(
        f"## {title} ({args.size / MiB:.0f} MiB blob, {args.runs} interleaved runs after "
        f"{args.warmup} warm-up, median; MB = 10^6 bytes)"
    )
    if args.label:
        print(f"label: {args.label}")
    print()
