"""Numbers read when Prometheus scrapes, not counted as they change: the cache's
size, bound and entries, its fills and their followers, the open client connections.

They are already kept by their owners (L{dockerproxy.cache.blobs.BlobCache.stats},
L{dockerproxy.listeners.ConnectionLimit}); a collector reads them on each scrape,
in the reactor thread, so nothing is added to any request's path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import BlobCache
    from dockerproxy.cache.fills import Fill
    from dockerproxy.listeners import ConnectionLimit


class StateCollector(Collector):
    """The cache's and the listeners' state; either may be absent (C{--no-cache})."""

    def __init__(self) -> None:
        self.blobs: BlobCache | None = None
        self.connections: ConnectionLimit | None = None

    def collect(self) -> Iterator[Metric]:
        if self.connections is not None:
            yield GaugeMetricFamily(
                "dockerproxy_client_connections",
                "Client connections open now (at --max-connections, new ones wait).",
                value=self.connections.open,
            )
        if self.blobs is None:
            return
        stats = self.blobs.stats()
        yield from cache_metrics(stats, self.blobs.fills_in_progress())


def cache_metrics(stats: dict[str, int | None], fills: list[Fill]) -> Iterator[Metric]:
    """The cache's families from L{BlobCache.stats} and its fills in progress."""

    def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, value=value)

    def counter(name: str, text: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, text, value=value)

    yield gauge("dockerproxy_cache_size_bytes", "Bytes of cached blobs.", stats["used_bytes"] or 0)
    if stats["max_size"] is not None:
        yield gauge(
            "dockerproxy_cache_max_size_bytes",
            "The cache's bound (--cache-max-size).",
            stats["max_size"],
        )
    yield gauge("dockerproxy_cache_blobs", "Blobs in the cache.", stats["blobs"] or 0)
    yield gauge(
        "dockerproxy_cache_fills_in_progress",
        "Blobs being written to the cache from an upstream or S3 now.",
        len(fills),
    )
    yield gauge(
        "dockerproxy_cache_fill_followers",
        "Clients following a fill in progress now (served as the blob lands).",
        sum(fill.followers for fill in fills),
    )
    yield counter(
        "dockerproxy_cache_coalesced_requests",
        "Requests for a blob being filled, served from that fill instead of another "
        "upstream request.",
        stats["coalesced"] or 0,
    )
    yield counter("dockerproxy_cache_fills", "Fills started.", stats["fills"] or 0)
    yield counter(
        "dockerproxy_cache_fill_failures", "Fills that failed.", stats["failed_fills"] or 0
    )
    yield counter(
        "dockerproxy_cache_evictions",
        "Blobs evicted to stay under the bound.",
        stats["evictions"] or 0,
    )
