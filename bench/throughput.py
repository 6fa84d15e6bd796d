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

The targets ``proxy-tls-h1`` and ``proxy-tls-h2`` are one more dockerproxy with
``--http2`` and an ``ssl:`` listener (a throwaway self-signed certificate made with the
openssl command), downloaded from with ``curl --http1.1`` and ``curl --http2``: HTTP/1.1
against HTTP/2 over the same TLS (``--targets proxy-tls-h1,proxy-tls-h2``).

``--proxy-src DIR`` runs dockerproxy from another source tree (a copy of the package in
DIR/dockerproxy, put first on PYTHONPATH), so changes can be measured without touching
the working tree.

The process, measuring, profiling and reporting machinery is shared with the other
benchmarks (bench/runner.py and the modules it names).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import proxies
from measuring import Target, measure_rounds, print_heading, print_table, summarize
from processes import Proc, Procs, free_port
from pyspy import profile_downloads
from report import finish_report
from runner import Bench, add_common_args, run_bench
from sysstats import RSSSampler, proc_status_kb

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


def start_nginx(
    procs: Procs, work: Path, name: str, upstream_port: int, buffering: bool, workers: str
) -> tuple[Proc, int]:
    """The reference: a tuned keepalive reverse proxy in front of docker-registry."""

    def http(port: int) -> str:
        return NGINX_HTTP.format(
            port=port, upstream_port=upstream_port, buffering="on" if buffering else "off"
        )

    return proxies.start_nginx(
        procs,
        work,
        name,
        http,
        workers,
        "Tuned reverse proxy in front of docker-registry (written by bench/throughput.py).",
    )


# -- main -----------------------------------------------------------------------------------

ALL_TARGETS = (
    "direct",
    "nginx-buffered",
    "nginx-unbuffered",
    "proxy",
    "proxy-tls-h1",
    "proxy-tls-h2",
)
TLS_TARGETS = {"proxy-tls-h1": ("--http1.1", "1.1"), "proxy-tls-h2": ("--http2", "2")}


def self_signed(work: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key (openssl)."""
    key, cert = work / "tls.key", work / "tls.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def tls_targets(bench: Bench, names: Sequence[str]) -> list[Target]:
    """One dockerproxy with --http2 on an ssl: listener, a target per forced HTTP version."""
    if not names:
        return []
    key, cert = self_signed(bench.work)
    tls_port = free_port()
    listen = f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    proxy, _ = proxies.start_proxy(
        bench.procs,
        bench.work,
        bench.registry.port,
        bench.args,
        ["--no-cache", "--http2", "--listen", listen],
        name="dockerproxy-tls",
    )
    targets = []
    for name in names:
        option, version = TLS_TARGETS[name]
        targets.append(
            Target(
                name,
                tls_port,
                proxy.pid,
                f"dockerproxy --http2, curl {option}",
                scheme="https",
                curl_options=(option, "--cacert", str(cert)),
                http_version=version,
            )
        )
    return targets


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p, json_name="throughput.json", profiled="proxied", profile_prefix="profile")
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma-separated subset of {','.join(ALL_TARGETS)}",
    )
    p.add_argument(
        "--nginx-workers",
        default="1",
        help="nginx worker_processes (default 1: the proxy is one process)",
    )
    p.add_argument(
        "--profile-only", action="store_true", help="only the profiled download (no measured runs)"
    )
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in args.targets:
        if t not in ALL_TARGETS:
            p.error(f"unknown target {t!r}")
    if args.profile_only:
        args.profile = True
    elif args.runs < 1:
        p.error("--runs must be at least 1 (or use --profile-only)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nginx = ("nginx",) if any(t.startswith("nginx") for t in args.targets) else ()
    return run_bench(
        args, run, prefix="dockerproxy-bench-", tools=("curl", "docker-registry", *nginx)
    )


def run(bench: Bench) -> int:
    args, procs, work, registry = bench.args, bench.procs, bench.work, bench.registry
    path = registry.blob_path()
    registry_port = registry.port
    targets: list[Target] = []
    want = set(args.targets) | ({"proxy"} if args.profile else set())
    if "direct" in want:
        targets.append(Target("direct", registry_port, registry.proc.pid, "docker-registry"))
    for name, buffering in (("nginx-buffered", True), ("nginx-unbuffered", False)):
        if name in want:
            ng, port = start_nginx(procs, work, name, registry_port, buffering, args.nginx_workers)
            targets.append(
                Target(name, port, ng.pid, f"proxy_buffering {'on' if buffering else 'off'}")
            )
    # --no-cache: a relay only.
    proxy, proxy_port = proxies.start_proxy(procs, work, registry_port, args, ["--no-cache"])
    if "proxy" in args.targets:
        targets.append(Target("proxy", proxy_port, proxy.pid, "dockerproxy"))
    targets += tls_targets(bench, [t for t in args.targets if t in TLS_TARGETS])
    rss_start_kb = proc_status_kb(proxy.pid, "VmRSS") or 0
    sampler = RSSSampler(proxy.pid)
    sampler.start()
    rounds = 0 if args.profile_only else args.warmup + args.runs
    try:
        measure_rounds(targets, path, args, registry.proc.pid, rounds)
    finally:
        sampler.stop()

    result = bench.results_head()
    result["nginx_worker_processes"] = args.nginx_workers
    if rounds:
        nginx_medians = {
            t.name: statistics.median(float(r["mb_s"]) for r in t.results)  # type: ignore[arg-type]
            for t in targets
            if t.name.startswith("nginx")
        }
        reference_name = max(nginx_medians, key=nginx_medians.__getitem__, default=None)
        reference = nginx_medians.get(reference_name) if reference_name else None
        result["reference"] = reference_name
        result["targets"] = [summarize(t, reference) for t in targets]
    hwm_kb = proc_status_kb(proxy.pid, "VmHWM") or 0
    rss = result["proxy_rss_mb"] = {
        "at_start": round(rss_start_kb / 1024, 1),
        "peak_sampled": round(sampler.peak_kb / 1024, 1),
        "vmhwm": round(hwm_kb / 1024, 1),
        "samples": sampler.samples,
    }
    if args.profile:
        url = f"http://127.0.0.1:{proxy_port}{path}"
        result["profile"] = profile_downloads(procs, work, proxy.pid, url, args)

    print_heading("dockerproxy download throughput", args)
    if rounds:
        print_table(result["targets"])  # type: ignore[arg-type]
        print()
        print(
            f"Reference nginx: **{result['reference']}** (the faster of proxy_buffering "
            f"on/off); nginx worker_processes {args.nginx_workers} (dockerproxy is a "
            f"single process, so one nginx worker is the fair comparison)."
        )
        print(
            "server CPU = CPU seconds of the serving process group / download time "
            "(for 'direct' it is the registry itself)."
        )
    print(
        f"dockerproxy RSS: {rss['at_start']} MB at start, peak {rss['vmhwm']} MB "
        f"(VmHWM), peak sampled every 50 ms {rss['peak_sampled']} MB"
    )
    print()
    finish_report(bench.info, result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
