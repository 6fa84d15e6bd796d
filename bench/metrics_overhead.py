"""What the metrics cost each request: the whole Site in-process, with and without them.

The proxy's Site (wiring.make_proxy / make_site, as servicetree.service_for builds it) answers
requests made over in-memory transports: a refused path (C{/nope}, the cheapest request
there is: a JSON 404, nothing upstream) and a ping relayed to an upstream (C{/v2/}, over
treq's in-memory StubTreq). Each kind runs in batches, alternating a Site without the
admin side and one wired as with C{--admin-listen} (the access log observed by
L{dockerproxy.admin.metrics.Metrics}, the upstream client reporting to it), and the
median microseconds per request of each is printed, with the difference.

    .venv/bin/python bench/metrics_overhead.py --requests 2000 --batches 15

No network and no disk: it measures the Python work per request, which is what the
metrics add to (the bytes of a download are not touched by them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Request

from dockerproxy.accesslog import access_logger
from dockerproxy.admin.metrics import Metrics
from dockerproxy.config import build_config
from dockerproxy.site import ProxySite
from dockerproxy.wiring import make_proxy, make_site

UPSTREAM = "http://upstream.test"


class Upstream(Resource):
    """Answers every request with a registry's 401 to /v2/."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Basic realm="x"')
        request.setHeader(b"content-type", b"application/json")
        return b'{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}'


def site(metered: bool) -> tuple[ProxySite, StubTreq]:
    clock = Clock()
    stub = StubTreq(Upstream())
    config = build_config({"upstream": UPSTREAM, "presets": False}, {})
    metrics = Metrics(clock) if metered else None
    if metrics is not None:
        proxy, _ = make_proxy(config, clock, http=stub, meters=metrics)
    else:
        proxy, _ = make_proxy(config, clock, http=stub)
    the_site = make_site(proxy, clock)
    if metrics is not None:
        the_site.access_log = access_logger(metrics.observe)
    return the_site, stub


def batch(the_site: ProxySite, stub: StubTreq, path: bytes, count: int) -> float:
    """Seconds per request for C{count} requests on one keep-alive connection."""
    transport = StringTransport()
    channel = the_site.buildProtocol(None)
    channel.makeConnection(transport)
    request = b"GET " + path + b" HTTP/1.1\r\nHost: mirror.test\r\n\r\n"
    start = time.perf_counter()
    for _ in range(count):
        channel.dataReceived(request)
        stub.flush()
        transport.clear()
    elapsed = time.perf_counter() - start
    channel.connectionLost(None)  # type: ignore[arg-type]
    return elapsed / count


def measure(
    path: bytes, requests: int, batches: int, make: Callable[[bool], tuple[ProxySite, StubTreq]]
) -> dict[bool, list[float]]:
    sites = {metered: make(metered) for metered in (False, True)}
    results: dict[bool, list[float]] = {False: [], True: []}
    for metered in (False, True):  # warm up
        batch(*sites[metered], path, requests // 10 or 1)
    for i in range(batches):
        order = (False, True) if i % 2 == 0 else (True, False)
        for metered in order:
            results[metered].append(batch(*sites[metered], path, requests))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests per batch (2000)")
    p.add_argument("--batches", type=int, default=15, help="batches per Site (15)")
    args = p.parse_args(argv)
    print(f"{'request':<28} {'without µs':>11} {'with µs':>9} {'added µs':>9} {'added':>7}")
    for label, path in (("GET /nope (404, local)", b"/nope"), ("GET /v2/ (relayed 401)", b"/v2/")):
        results = measure(path, args.requests, args.batches, site)
        without = statistics.median(results[False]) * 1e6
        with_ = statistics.median(results[True]) * 1e6
        print(
            f"{label:<28} {without:>11.1f} {with_:>9.1f} {with_ - without:>9.1f}"
            f" {(with_ - without) / without:>7.1%}"
        )


if __name__ == "__main__":
    main()
