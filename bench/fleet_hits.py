"""What a fleet's Redis costs a cache hit: one proxy alone and one with ``--redis``.

    .venv/bin/python bench/fleet_hits.py [--size 4KiB] [--requests 2000] [--rounds 9]

Starts docker-registry with one small public blob, Debian's redis-server (nothing on
disk), and two dockerproxy instances with their own caches, one with ``--redis`` (no S3
tier: what a hit costs is the access records' read before the cache answers, one Redis
round trip through the fleet's thread pool). Each proxy's cache is warmed with one GET;
then rounds of ``--requests`` sequential GETs of the blob on one keep-alive connection
alternate between the two, and the median microseconds per request of each is printed
with the difference. Everything listens on 127.0.0.1 and is stopped however the bench
ends (bench/processes.py).
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import socket
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from processes import Proc, Procs, free_port, session, wait_http
from proxies import start_proxy
from registry import start_registry
from runner import parse_size


def start_redis(procs: Procs, work: Path) -> str:
    """redis-server on a free port of 127.0.0.1, nothing on disk; its URL."""
    port = free_port()
    argv = [
        shutil.which("redis-server") or "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    proc = procs.start(Proc("redis", argv, work, cwd=work))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server not answering:\n{proc.log_tail()}")


def hits(port: int, path: str, count: int) -> float:
    """Seconds per GET for C{count} GETs on one keep-alive connection; each must be a 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        start = time.perf_counter()
        for _ in range(count):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status}")
        return (time.perf_counter() - start) / count
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=parse_size("4KiB"), help="blob size (4KiB)")
    p.add_argument("--requests", type=int, default=2000, help="GETs per round (2000)")
    p.add_argument("--rounds", type=int, default=9, help="rounds per proxy (9)")
    args = p.parse_args(argv)
    proxy_args = argparse.Namespace(proxy_src=None, proxy_env=[], proxy_arg=[])
    with session("fleet-hits-", keep_tmp=False) as (procs, work):
        registry = start_registry(procs, work, args.size)
        redis = start_redis(procs, work)
        ports = {}
        for label, extra in (("alone", []), ("--redis", ["--redis", redis])):
            cache = work / f"cache-{label.strip('-')}"
            options = ["--cache-dir", str(cache), "--log-format", "json", *extra]
            proc, port = start_proxy(
                procs, work, registry.port, proxy_args, options, name=f"proxy-{label.strip('-')}"
            )
            wait_http(port, "/v2/", proc)
            hits(port, registry.blob_path(), 1)  # the fill
            time.sleep(1.5)  # the access records are written a second after they change
            hits(port, registry.blob_path(), args.requests // 10 or 1)  # warm up
            ports[label] = port
        results: dict[str, list[float]] = {label: [] for label in ports}
        for i in range(args.rounds):
            order = list(ports) if i % 2 == 0 else list(reversed(ports))
            for label in order:
                results[label].append(hits(ports[label], registry.blob_path(), args.requests))
        alone = statistics.median(results["alone"]) * 1e6
        fleet = statistics.median(results["--redis"]) * 1e6
        print(f"{'proxy':<10} {'µs per hit (median of rounds)':>30} {'min':>8} {'max':>8}")
        for label, samples in results.items():
            us = [s * 1e6 for s in samples]
            print(f"{label:<10} {statistics.median(us):>30.0f} {min(us):>8.0f} {max(us):>8.0f}")
        print(f"added by the fleet: {fleet - alone:.0f} µs per hit ({(fleet - alone) / alone:.0%})")


if __name__ == "__main__":
    main()
