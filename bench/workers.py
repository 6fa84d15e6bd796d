"""Every core (--workers): cached manifests by tag and TLS cache hits, 1 vs 2 workers,
beside nginx with the same number of worker processes.

Run from the project root with the project's venv:

    .venv/bin/python bench/workers.py [--size 64MiB] [--runs 5] [--seconds 5]

What it does (everything on 127.0.0.1; every process in its own process group, stopped
however the run ends; the machinery is bench/runner.py):

1. starts docker-registry with one blob of C{--size} and a manifest naming it, tagged
   C{latest}, in C{bench/blob}, and a self-signed certificate for 127.0.0.1 (openssl);
2. for 1, then 2 workers: dockerproxy with its cache and C{--workers N}, on a plain
   C{tcp:} port and an C{ssl:} port; it is warmed (the manifest by tag and the blob,
   which is then committed) and checked to answer both from cache (the registry's
   access log shows no further GET); beside it nginx with C{worker_processes N}
   serving the same manifest bytes (a static file) and, over TLS with the same
   certificate, the proxy's committed blob file;
3. cached manifests by tag: C{wrk -c 50} (HTTP/1.1 keep-alive, 50 connections) for
   C{--seconds} with the manifest's Accept, interleaved nginx / proxy, C{--runs} times:
   requests per second (every answer must be a 200). Not C{ab -k}: ab asks for keep-alive
   in HTTP/1.0, which twisted.web never grants, so every request of the proxy's would be
   a new connection where nginx's are not (registry clients all speak HTTP/1.1);
4. TLS cache hits: C{--clients} (8) curl processes pulling the blob at once over HTTPS,
   interleaved, C{--runs} times: aggregate MB/s (MB = 10^6 bytes), every pull complete;
5. prints a markdown table with the ratios the issue asks for (2 workers / 1 worker,
   proxy / nginx at equal workers) and writes bench/results/workers.json.

The load generators (one ab, the curls) run on the same machine and take cores the
servers would use: on a machine with few cores the ratios say as much about that as
about the servers.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import proxies
from measuring import settle
from processes import Proc, free_port
from registry import OCI_MANIFEST, REPO, MiB, push_manifest
from report import finish_report
from runner import Bench, add_common_args, parse_size, run_bench

MANIFEST_PATH = f"/v2/{REPO}/manifests/latest"

NGINX_HTTP = """\
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    types {{ }}
    default_type application/octet-stream;

    server {{
        listen 127.0.0.1:{port};
        location = /v2/ {{
            return 200 "{{}}";
        }}
        location = {manifest_path} {{
            default_type {media_type};
            alias {manifest_file};
        }}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = /v2/ {{
            return 200 "{{}}";
        }}
        location = {blob_path} {{
            alias {blob_file};
        }}
    }}"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(p, json_name="workers.json", warmup=False)
    p.set_defaults(size=parse_size("64MiB"))
    p.add_argument("--seconds", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--connections", type=int, default=50, help="wrk's -c (default 50)")
    p.add_argument("--clients", type=int, default=8, help="concurrent TLS pulls (default 8)")
    p.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(
        args,
        run,
        prefix="dockerproxy-workers-",
        tools=("wrk", "curl", "nginx", "docker-registry"),
        access_log=True,
    )


def run(bench: Bench) -> int:
    args, registry = bench.args, bench.registry
    push_manifest(registry.port, registry.digests[0], args.size)
    key, cert = self_signed(bench.work)
    rows = []
    for workers in args.workers:
        rows.append(measure_workers(bench, workers, key, cert))
    table = ratios(rows)
    print_results(table, args)
    result = {**bench.results_head(), "rows": table}
    finish_report(bench.info, result, args)
    return 0


def measure_workers(bench: Bench, workers: int, key: Path, cert: Path) -> dict[str, Any]:
    """The proxy and nginx with C{workers} workers each: both measurements, interleaved."""
    args, procs, work, registry = bench.args, bench.procs, bench.work, bench.registry
    cache = work / f"cache-{workers}"
    tls_port = free_port()
    listen = f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    proxy, port = proxies.start_proxy(
        procs,
        work,
        registry.port,
        args,
        [
            *("--cache-dir", str(cache), "--cache-max-size", f"{4 * args.size // MiB + 64}MiB"),
            *("--workers", str(workers), "--listen", listen, "--log-format", "json"),
        ],
        code_module="dockerproxy.workers.supervisor",
        name=f"dockerproxy-{workers}",
    )
    wait_ready(proxy, workers)
    blob_path = registry.blob_path()
    manifest = warm(port, tls_port, cert, blob_path, args.size)
    blob_file = cache / "blobs" / "sha256" / registry.digests[0][:2] / registry.digests[0]
    manifest_file = work / f"manifest-{workers}.json"
    manifest_file.write_bytes(manifest)
    nginx, nginx_port, nginx_tls = start_nginx(
        bench, workers, manifest_file, blob_path, blob_file, key, cert
    )
    gets_before = registry_gets(registry.proc)
    targets = {"nginx": (nginx_port, nginx_tls), "dockerproxy": (port, tls_port)}
    rps: dict[str, list[float]] = {name: [] for name in targets}
    mbs: dict[str, list[float]] = {name: [] for name in targets}
    for run_index in range(args.runs):
        for name, (plain, tls) in targets.items():
            settle(args.quiet_wait)
            rps[name].append(manifests_per_second(plain, args.seconds, args.connections))
            settle(args.quiet_wait)
            mbs[name].append(tls_hits(tls, cert, blob_path, args.clients, args.size, args.timeout))
            print(
                f"{workers} worker(s), run {run_index + 1}, {name}: "
                f"{rps[name][-1]:.0f} manifests/s, {mbs[name][-1]:.0f} MB/s TLS hits",
                flush=True,
            )
    if registry_gets(registry.proc) != gets_before:
        raise RuntimeError("a measured request reached the registry: not a cache hit")
    proxy.stop()
    nginx.stop()
    return {
        "workers": workers,
        **{f"{name}_manifests_per_s": round(statistics.median(rps[name])) for name in targets},
        **{f"{name}_tls_hit_mb_s": round(statistics.median(mbs[name]), 1) for name in targets},
        "runs": {"manifests_per_s": rps, "tls_hit_mb_s": mbs},
    }


def self_signed(work: Path) -> tuple[Path, Path]:
    key, cert = work / "key.pem", work / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"),
            *("-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def wait_ready(proxy: Proc, workers: int, timeout: float = 30.0) -> None:
    """Until every worker said it serves (a supervisor's log); one process is ready already."""
    if workers == 1:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = proxy.log_path.read_text(errors="replace")
        if sum("is ready" in line for line in log.splitlines()) >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proxy.name}: not every worker started:\n{proxy.log_tail()}")


def warm(port: int, tls_port: int, cert: Path, blob_path: str, size: int) -> bytes:
    """Fill the proxy's cache with the manifest (by tag) and the blob; the manifest's bytes."""
    manifest = subprocess.run(
        [
            *("curl", "-sf", "--noproxy", "*", "-H", f"Accept: {OCI_MANIFEST}"),
            f"http://127.0.0.1:{port}{MANIFEST_PATH}",
        ],
        check=True,
        capture_output=True,
    ).stdout
    pulled = pull(f"https://127.0.0.1:{tls_port}{blob_path}", cert, 600)
    if pulled != ("200", size):
        raise RuntimeError(f"warming the blob over TLS: {pulled}")
    return manifest


def start_nginx(
    bench: Bench,
    workers: int,
    manifest_file: Path,
    blob_path: str,
    blob_file: Path,
    key: Path,
    cert: Path,
) -> tuple[Proc, int, int]:
    tls_port = free_port()

    def http(port: int) -> str:
        return NGINX_HTTP.format(
            port=port,
            tls_port=tls_port,
            manifest_path=MANIFEST_PATH,
            media_type=OCI_MANIFEST,
            manifest_file=manifest_file,
            blob_path=blob_path,
            blob_file=blob_file,
            cert=cert,
            key=key,
        )

    proc, port = proxies.start_nginx(
        bench.procs,
        bench.work,
        f"nginx-{workers}",
        http,
        str(workers),
        "nginx beside dockerproxy --workers (bench/workers.py)",
    )
    return proc, port, tls_port


def manifests_per_second(port: int, seconds: int, connections: int) -> float:
    """wrk: HTTP/1.1 keep-alive GETs of the manifest by tag; every answer a 200."""
    out = subprocess.run(
        [
            *("wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s"),
            *("-H", f"Accept: {OCI_MANIFEST}"),
            f"http://127.0.0.1:{port}{MANIFEST_PATH}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    failed = re.search(r"^\s*(Non-2xx or 3xx responses|Socket errors):", out, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if rate is None or failed is not None:
        raise RuntimeError(f"wrk on port {port}:\n{out}")
    return float(rate[1])


def pull(url: str, cert: Path, timeout: float) -> tuple[str, int]:
    out = subprocess.run(
        [
            *("curl", "-s", "--noproxy", "*", "--cacert", str(cert), "-o", "/dev/null"),
            *("-w", "%{http_code} %{size_download}", url),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout.split()
    return (out[0], int(out[1])) if len(out) == 2 else ("-", 0)


def tls_hits(
    port: int, cert: Path, blob_path: str, clients: int, size: int, timeout: float
) -> float:
    """C{clients} curl processes pulling the blob over HTTPS at once: aggregate MB/s."""
    url = f"https://127.0.0.1:{port}{blob_path}"
    argv = [
        *("curl", "-s", "--noproxy", "*", "--cacert", str(cert), "-o", "/dev/null"),
        *("-w", "%{http_code} %{size_download}", url),
    ]
    start = time.monotonic()
    curls = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    try:
        outputs = [curl.communicate(timeout=timeout)[0].split() for curl in curls]
    finally:
        for curl in curls:
            if curl.poll() is None:
                curl.kill()
                curl.wait()
    wall = time.monotonic() - start
    bad = [o for o in outputs if o != ["200", str(size)]]
    if bad:
        raise RuntimeError(f"TLS pulls from port {port} failed: {bad[:3]}")
    return clients * size / wall / 1e6


def registry_gets(registry: Proc) -> int:
    """GETs of the manifest or the blob in docker-registry's access log."""
    text = registry.log_path.read_text(errors="replace")
    return len(re.findall(r'"GET /v2/' + re.escape(REPO) + r"/(?:manifests|blobs)/", text))


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with proxy / nginx, and each row after the first with its ratio to the
    first row's worker count (the scaling the issue asks for)."""
    first = rows[0]
    for row in rows:
        for measure in ("manifests_per_s", "tls_hit_mb_s"):
            proxy, nginx = float(row[f"dockerproxy_{measure}"]), float(row[f"nginx_{measure}"])
            row[f"{measure}_to_nginx"] = round(proxy / nginx, 2)
            base = float(first[f"dockerproxy_{measure}"])
            row[f"{measure}_to_first"] = round(proxy / base, 2)
    return rows


def print_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print(
        f"## Every core ({args.seconds} s of manifest GETs by tag at {args.connections} keep-alive "
        f"connections; {args.clients} TLS pulls of a {args.size / MiB:.0f} MiB cached blob; "
        f"median of {args.runs} interleaved runs)"
    )
    print()
    print(
        "| workers | dockerproxy manifests/s | nginx manifests/s | proxy / nginx | proxy vs "
        f"{rows[0]['workers']} worker | dockerproxy TLS hits MB/s | nginx TLS hits MB/s "
        "| proxy / nginx | proxy vs first |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['dockerproxy_manifests_per_s']} | {r['nginx_manifests_per_s']} "
            f"| {r['manifests_per_s_to_nginx']} | {r['manifests_per_s_to_first']} "
            f"| {r['dockerproxy_tls_hit_mb_s']} | {r['nginx_tls_hit_mb_s']} "
            f"| {r['tls_hit_mb_s_to_nginx']} | {r['tls_hit_mb_s_to_first']} |"
        )
    print()


if __name__ == "__main__":
    sys.exit(main())
