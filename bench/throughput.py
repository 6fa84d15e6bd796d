"""Blob download throughput: docker-registry direct vs. tuned nginx vs. dockerproxy.

Run from the project root with the project's venv:

    .venv/bin/python bench/throughput.py [--size 1GiB] [--runs 5] [--profile]

What it does (everything on 127.0.0.1, every process in its own process group and
stopped in a ``finally``, also on Ctrl-C / SIGTERM):

1. starts docker-registry (no auth, filesystem storage in a temp dir) and writes one
   large pseudo-random (incompressible) blob straight into its storage layout, linked
   into the repository ``bench/blob``;
2. starts nginx (``worker_processes 1`` by default: dockerproxy is one process, so one
   nginx worker is the fair comparison) as a keepalive reverse proxy in front of the
   registry, twice: once with ``proxy_buffering on`` (large buffers) and once with
   ``proxy_buffering off``; the faster of the two is the reference;
3. starts dockerproxy (``twistd -n dockerproxy``) pointed at the registry;
4. downloads the blob with ``curl -o /dev/null`` from each target, interleaved
   (direct, nginx, nginx, proxy, direct, ...), after one warm-up round, and reports the
   median / min / max MB/s (MB = 10^6 bytes) and the CPU the serving processes used;
5. samples dockerproxy's RSS every 50 ms and reads its VmHWM (peak RSS) at the end;
6. prints a markdown table and machine info, and writes bench/results/throughput.json;
7. ``--profile`` then records one proxied download with py-spy (a flamegraph SVG and a
   raw collapsed-stack text file) and prints the top functions by self time.

``--proxy-src DIR`` runs dockerproxy from another source tree (a copy of the package in
DIR/dockerproxy, put first on PYTHONPATH), so changes can be measured without touching
the working tree.

The process, measuring, profiling and reporting machinery is shared with
bench/cache_hit.py in bench/common.py.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import (
    REPO,
    RESULTS,
    ROOT,
    MiB,
    Proc,
    Procs,
    RSSSampler,
    Target,
    finish_report,
    http_get_head,
    imported_file,
    machine_info,
    measure,
    parse_size,
    print_table,
    proc_status_kb,
    py_spy_record,
    raise_interrupt,
    start_registry,
    summarize,
    summarize_raw,
    wait_for_quiet,
    write_blob,
)
from common import start_nginx as common_start_nginx
from common import start_proxy as _start_proxy

# -- nginx ----------------------------------------------------------------------------------

NGINX_HTTP = """\
    upstream registry {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://registry;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering {buffering};
            proxy_buffer_size 256k;
            proxy_buffers 8 1m;
            proxy_busy_buffers_size 2m;
            proxy_max_temp_file_size 0;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}"""


def start_nginx(procs: Procs, work: Path, name: str, upstream_port: int, buffering: bool,
                workers: str) -> tuple[Proc, int]:
    """The reference: a tuned keepalive reverse proxy in front of docker-registry."""
    def http(port: int) -> str:
        return NGINX_HTTP.format(port=port, upstream_port=upstream_port,
                                 buffering="on" if buffering else "off")

    return common_start_nginx(procs, work, name, http, workers,
                              "Tuned reverse proxy in front of docker-registry "
                              "(written by bench/throughput.py).")


# -- dockerproxy ----------------------------------------------------------------------------


def start_proxy(procs: Procs, work: Path, upstream_port: int, src: Path | None,
                extra: Sequence[str], extra_env: Sequence[str] = ()) -> tuple[Proc, int]:
    """dockerproxy as a relay only (C{--no-cache}), plus the C{extra} arguments."""
    return _start_proxy(procs, work, upstream_port, src, ["--no-cache", *extra], extra_env)


def imported_relay_file(env: dict[str, str], cwd: Path) -> str:
    """The relay.py the proxy's interpreter imports with this environment (checks --proxy-src)."""
    return imported_file(env, cwd, "dockerproxy.relay")


# -- main -----------------------------------------------------------------------------------

ALL_TARGETS = ("direct", "nginx-buffered", "nginx-unbuffered", "proxy")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                   help="blob size, e.g. 1GiB, 256MiB (default 1GiB)")
    p.add_argument("--runs", type=int, default=5, help="measured runs per target (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1)")
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help=f"comma-separated subset of {','.join(ALL_TARGETS)}")
    p.add_argument("--nginx-workers", default="1",
                   help="nginx worker_processes (default 1: the proxy is one process)")
    p.add_argument("--proxy-src", type=Path, default=None,
                   help="run dockerproxy from DIR/dockerproxy (put first on PYTHONPATH)")
    p.add_argument("--proxy-arg", action="append", default=[],
                   help="extra twistd dockerproxy argument (repeatable)")
    p.add_argument("--proxy-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for dockerproxy (repeatable), e.g. "
                        "MALLOC_MMAP_THRESHOLD_=8388608")
    p.add_argument("--quiet-wait", type=float, default=30.0, metavar="SECONDS",
                   help="before each download wait up to this long for the machine to be "
                        "idle (other jobs skew the numbers); 0 disables (default 30)")
    p.add_argument("--label", default="", help="a label stored in the JSON (for experiments)")
    p.add_argument("--json", type=Path, default=RESULTS / "throughput.json",
                   help="where to write results (default bench/results/throughput.json)")
    p.add_argument("--profile", action="store_true",
                   help="after the runs, record one proxied download with py-spy "
                        "(bench/results/profile.svg and profile.txt)")
    p.add_argument("--profile-only", action="store_true",
                   help="only the profiled download (no measured runs)")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s (200)")
    p.add_argument("--profile-native", action="store_true",
                   help="include native (C) frames in the profile")
    p.add_argument("--profile-prefix", default="profile",
                   help="file name prefix in bench/results (default 'profile')")
    p.add_argument("--timeout", type=float, default=600, help="per-download timeout (s)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, blob)")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in args.targets:
        if t not in ALL_TARGETS:
            p.error(f"unknown target {t!r}")
    if args.proxy_src is not None:
        args.proxy_src = args.proxy_src.resolve()
    if args.profile_only:
        args.profile = True
    elif args.runs < 1:
        p.error("--runs must be at least 1 (or use --profile-only)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    if shutil.which("curl") is None:
        print("curl is not installed: apt-get install -y curl", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix="dockerproxy-bench-"))
    sampler: RSSSampler | None = None
    try:
        info = machine_info()
        t0 = time.monotonic()
        registry, registry_port, storage = start_registry(procs, work)
        hexdigest = write_blob(storage, args.size)
        print(f"blob sha256:{hexdigest} ({args.size} bytes) written in "
              f"{time.monotonic() - t0:.1f}s to {storage}", flush=True)
        path = f"/v2/{REPO}/blobs/sha256:{hexdigest}"
        status, headers = http_get_head(registry_port, path)
        if status != 200 or int(headers.get("content-length", -1)) != args.size:
            raise RuntimeError(f"registry GET {path}: {status} {headers}")

        targets: list[Target] = []
        want = set(args.targets) | ({"proxy"} if args.profile else set())
        if "direct" in want:
            targets.append(Target("direct", registry_port, registry.pid, "docker-registry"))
        for name, buffering in (("nginx-buffered", True), ("nginx-unbuffered", False)):
            if name in want:
                ng, port = start_nginx(procs, work, name, registry_port, buffering,
                                       args.nginx_workers)
                targets.append(Target(name, port, ng.pid,
                                      f"proxy_buffering {'on' if buffering else 'off'}"))
        proxy, proxy_port = start_proxy(procs, work, registry_port, args.proxy_src,
                                        args.proxy_arg, args.proxy_env)
        proxy_target = Target("proxy", proxy_port, proxy.pid, "dockerproxy")
        if "proxy" in args.targets:
            targets.append(proxy_target)
        rss_start_kb = proc_status_kb(proxy.pid, "VmRSS") or 0
        sampler = RSSSampler(proxy.pid)
        sampler.start()

        rounds = 0 if args.profile_only else args.warmup + args.runs
        for i in range(rounds):
            warm = i < args.warmup
            for target in targets:
                if args.quiet_wait > 0:
                    wait_for_quiet(0.15, args.quiet_wait)
                r = measure(target, path, args.size, registry.pid, args.timeout)
                tag = "warm-up" if warm else f"run {i - args.warmup + 1}/{args.runs}"
                print(f"{tag:>9} {target.name:<17} {float(r['mb_s']):8.1f} MB/s  "  # type: ignore[arg-type]
                      f"{float(r['seconds']):6.2f}s  server {float(r['server_cores']):.2f} "  # type: ignore[arg-type]
                      f"cores  registry {float(r['registry_cores']):.2f}  "  # type: ignore[arg-type]
                      f"curl {float(r['curl_cpu_s']):.2f}s CPU  server user/sys "
                      f"{r['server_user_s']}/{r['server_sys_s']}s minflt {r['server_minflt']}  "
                      f"other {r['foreign_cores']} cores",
                      flush=True)  # type: ignore[arg-type]
                if not warm:
                    target.results.append(r)

        result: dict[str, object] = {
            "label": args.label, "size_bytes": args.size, "runs": args.runs,
            "warmup": args.warmup, "digest": f"sha256:{hexdigest}",
            "nginx_worker_processes": args.nginx_workers, "machine": info,
            "proxy_src": str(args.proxy_src) if args.proxy_src else None,
            "proxy_args": args.proxy_arg, "proxy_env": args.proxy_env,
        }
        if rounds:
            nginx_medians = {t.name: statistics.median(float(r["mb_s"]) for r in t.results)  # type: ignore[arg-type]
                             for t in targets if t.name.startswith("nginx")}
            reference_name = max(nginx_medians, key=nginx_medians.__getitem__, default=None)
            reference = nginx_medians.get(reference_name) if reference_name else None
            rows = [summarize(t, reference) for t in targets]
            result["reference"] = reference_name
            result["targets"] = rows

        sampler.stop()
        hwm_kb = proc_status_kb(proxy.pid, "VmHWM") or 0
        result["proxy_rss_mb"] = {
            "at_start": round(rss_start_kb / 1024, 1),
            "peak_sampled": round(sampler.peak_kb / 1024, 1),
            "vmhwm": round(hwm_kb / 1024, 1),
            "samples": sampler.samples,
        }

        if args.profile:
            url = f"http://127.0.0.1:{proxy_port}{path}"
            prof: dict[str, object] = {}
            for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
                out = RESULTS / f"{args.profile_prefix}.{suffix}"
                r = py_spy_record(procs, work, proxy.pid, url, args.size, out, fmt,
                                  args.profile_rate, args.profile_native, args.timeout)
                prof[fmt] = {"file": str(out.relative_to(ROOT)), "mb_s": r["mb_s"]}
                print(f"profiled download ({fmt}): {float(r['mb_s']):.1f} MB/s -> {out}",  # type: ignore[arg-type]
                      flush=True)
            summary = summarize_raw(RESULTS / f"{args.profile_prefix}.txt")
            prof["summary"] = summary
            result["profile"] = prof

        print()
        print(f"## dockerproxy download throughput ({args.size / MiB:.0f} MiB blob, "
              f"{args.runs} interleaved runs after {args.warmup} warm-up, median; "
              f"MB = 10^6 bytes)")
        if args.label:
            print(f"label: {args.label}")
        print()
        if rounds:
            print_table(result["targets"])  # type: ignore[arg-type]
            print()
            print(f"Reference nginx: **{result['reference']}** (the faster of proxy_buffering "
                  f"on/off); nginx worker_processes {args.nginx_workers} (dockerproxy is a "
                  f"single process, so one nginx worker is the fair comparison).")
            print("server CPU = CPU seconds of the serving process group / download time "
                  "(for 'direct' it is the registry itself).")
        rss = result["proxy_rss_mb"]
        print(f"dockerproxy RSS: {rss['at_start']} MB at start, peak {rss['vmhwm']} MB "  # type: ignore[index]
              f"(VmHWM), peak sampled every 50 ms {rss['peak_sampled']} MB")  # type: ignore[index]
        print()
        finish_report(info, result, args.json, args.profile)
        return 0
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        if sampler is not None:
            sampler.stop()
        procs.stop_all()
        if args.keep_tmp:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
