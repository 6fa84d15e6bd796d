"""Request latency under load, for the benchmarks: a stream of GETs due at a fixed
rate, its samples, and their percentiles (used by bench/commit_latency.py).

Each request's latency is counted from the time it was due, not sent, so requests
stuck behind a stalled one count too (no coordinated omission); its service time
from its send is what the server took, without the client's own lateness.
"""

from __future__ import annotations

import http.client
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection


@dataclass
class Sample:
    scheduled: float  # time.monotonic() the request was due
    latency: float  # from scheduled to the end of the response
    service: float  # from sent to the end of the response
    status: int


class RequestStream:
    """GETs of one path on one keep-alive connection, due every 1/rate seconds.

    In a process of its own: no thread of the bench (the commit watcher) can hold
    its interpreter's lock while a request is due.
    """

    def __init__(
        self, port: int, path: str, rate: float, headers: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.path = path
        self.headers = headers or {}
        self.interval = 1.0 / rate
        self.samples: list[Sample] = []
        self.error: str | None = None
        self._halt = multiprocessing.Event()
        self._results, child_end = multiprocessing.Pipe(duplex=False)
        self._process = multiprocessing.Process(target=self._run, args=(child_end,), daemon=True)

    def start(self) -> None:
        self._process.start()

    def stop(self) -> None:
        self._halt.set()
        if self._results.poll(120):
            self.samples, self.error = self._results.recv()
        else:
            self.error = "the stream process sent nothing"
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    def _run(self, results: Connection) -> None:
        samples: list[Sample] = []
        error = None
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        due = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
        try:
            while not self._halt.is_set():
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                sent = time.monotonic()
                conn.request("GET", self.path, headers=self.headers)
                response = conn.getresponse()
                response.read()
                end = time.monotonic()
                samples.append(Sample(due, end - due, end - sent, response.status))
                due += self.interval
        except Exception as e:  # reported by the bench
            error = repr(e)
        finally:
            conn.close()
        results.send((samples, error))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: Sequence[Sample]) -> dict[str, object]:
    """p50 / p99 / max of the latency (from the scheduled time) and of the service time
    (from the send: what the proxy took, without the client's own lateness)."""
    if not samples:
        return {"n": 0}
    result: dict[str, object] = {"n": len(samples)}
    for name, values in (
        ("latency", [s.latency for s in samples]),
        ("service", [s.service for s in samples]),
    ):
        ms = [v * 1000 for v in values]
        result[name] = {
            "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(percentile(ms, 0.99), 2),
            "max_ms": round(max(ms), 2),
        }
    return result


def brief(row: dict[str, object]) -> str:
    """C{n=.. p50/p99/max ms (service p99 ..)}, for the line printed after each run."""
    lat, svc = row.get("latency", {}), row.get("service", {})
    assert isinstance(lat, dict) and isinstance(svc, dict)
    return f"n={row['n']} {cells(lat, '/')} ms (service p99 {svc.get('p99_ms')})"


def cells(stats: dict[str, object], sep: str = " | ") -> str:
    return sep.join(str(stats.get(k, "-")) for k in ("p50_ms", "p99_ms", "max_ms"))
