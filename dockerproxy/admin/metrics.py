"""The proxy's numbers in Prometheus form, on a registry the service owns.

Most come from the access events (L{dockerproxy.accesslog}): L{Metrics.observe}
is an observer of the Site's access log, so every request, answered or refused
by the channel, is counted from the same fields its log line shows. The
upstream client and the S3 store report their requests through
L{dockerproxy.meters.Meters}, which L{Metrics} implements; the cache's size and
fills are read when scraped (L{dockerproxy.admin.collectors}).

Every label has a bounded set of values: routes are classified, methods outside
the usual ones count as C{other}, statuses are the proxy's own, registries the
configured ones, reasons and cache results the proxy's words. Per request the
cost is a few counter increments; the labelled children are kept in dicts, so
nothing is allocated beyond a key tuple.

L{Tally} keeps plain totals beside the counters, for the status page's history
(L{dockerproxy.admin.history}), which samples it once a minute.

With workers (L{dockerproxy.workers}) every worker counts, into the files of
C{prometheus_client}'s multiprocess mode (C{PROMETHEUS_MULTIPROC_DIR}, which the
supervisor sets), and worker 0, which serves the admin listener, exposes their sum
(L{Metrics.exposition}) beside its own collectors (the cache's state, the process).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogEvent
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from dockerproxy import __version__
from dockerproxy.accesslog import ROUTES

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Routes whose requests the cache answers, and the kind of content each is.
CACHE_KINDS = {"blob": "blob", "manifest": "manifest", "tag": "tag"}
# Cache results answered from the local cache: the hit ratio's numerator.
LOCAL_RESULTS = frozenset({"hit", "revalidated", "stale"})
# Seconds: a pull's blob can take minutes, a cached manifest a millisecond.
DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
# Distinct images tallied between two samples of the history; more count as OTHER.
MAX_IMAGES = 1000
OTHER = "(other)"
# Set by the supervisor of workers: where each worker's counts are kept for the sum.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class Tally:
    """Totals since the last sample (L{take}): what the history records each minute."""

    requests: int = 0
    lookups: int = 0  # requests the cache answered, whatever its answer
    hits: int = 0  # of those, answered from the local cache
    served: int = 0  # body bytes sent to clients
    fetched: int = 0  # body bytes upstreams announced (Content-Length)
    ratelimits: dict[str, int] = field(default_factory=dict)  # registry -> last remaining
    images: dict[str, list[int]] = field(default_factory=dict)  # image -> [pulls, bytes]

    def take(self) -> Tally:
        """These totals, and start again from zero."""
        taken = Tally(
            self.requests,
            self.lookups,
            self.hits,
            self.served,
            self.fetched,
            self.ratelimits,
            self.images,
        )
        self.requests = self.lookups = self.hits = self.served = self.fetched = 0
        self.ratelimits, self.images = {}, {}
        return taken


class Metrics:
    """The counters, gauges and histograms; an access-log observer and a L{Meters}."""

    def __init__(
        self,
        clock: IReactorTime,
        registry: CollectorRegistry | None = None,
        multiprocess: str | None = None,
    ) -> None:
        """C{multiprocess}: the directory of the workers' counts (L{MULTIPROCESS})."""
        self.clock = clock
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess
        self._collectors: list[Collector] = []  # not counts: exposed as they are
        self.requests = Counter(
            "dockerproxy_requests_total",
            "Client requests, answered or refused, by route, method and status.",
            ("route", "method", "status"),
            registry=r,
        )
        self.duration = Histogram(
            "dockerproxy_request_duration_seconds",
            "Seconds from a request's arrival to its last byte sent, by route.",
            ("route",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.response_bytes = Counter(
            "dockerproxy_response_bytes_total",
            "Response body bytes sent to clients, by route.",
            ("route",),
            registry=r,
        )
        self.cache_requests = Counter(
            "dockerproxy_cache_requests_total",
            "Requests the pull-through cache answered, by kind (blob, manifest, tag) and "
            "result (hit, miss, revalidated, stale, s3, s3-redirect, uncached).",
            ("kind", "result"),
            registry=r,
        )
        self.refusals = Counter(
            "dockerproxy_refused_requests_total",
            "Requests the proxy refused itself, by reason (denials such as ip, repository, "
            "auth; limits such as rate, pulls; the channel's bounds such as request_timeout).",
            ("reason",),
            registry=r,
        )
        self.upstream_requests = Counter(
            "dockerproxy_upstream_requests_total",
            "Requests to upstream registries and their token realms, by registry and "
            "status (error: no answer; timeout: none in time).",
            ("registry", "status"),
            registry=r,
        )
        self.upstream_bytes = Counter(
            "dockerproxy_upstream_response_bytes_total",
            "Body bytes upstream answers announced (Content-Length), by registry.",
            ("registry",),
            registry=r,
        )
        self.ratelimit = Gauge(
            "dockerproxy_upstream_ratelimit_remaining",
            "The last ratelimit-remaining an upstream sent (Docker Hub's pull quota).",
            ("registry",),
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.last_answer = Gauge(
            "dockerproxy_upstream_last_answer_timestamp_seconds",
            "When the registry last answered a request (any status), in Unix time.",
            ("registry",),
            registry=r,
            multiprocess_mode="max",
        )
        self.s3_errors = Counter(
            "dockerproxy_s3_errors_total",
            "Failed requests to the shared S3 cache tier, by S3 operation.",
            ("operation",),
            registry=r,
        )
        self.fleet_fallbacks = Counter(
            "dockerproxy_fleet_fallbacks_total",
            "Fleet calls Redis did not answer (down, slow, in back-off): the instance went on "
            "alone, by operation.",
            ("operation",),
            registry=r,
        )
        Gauge(
            "dockerproxy_build_info",
            "The running version.",
            ("version",),
            registry=r,
            multiprocess_mode="max",
        ).labels(__version__).set(1)
        self.add_collector(ProcessCollector(registry=None))
        self.tally = Tally()
        # When any upstream last answered (clock seconds); None: not since the start.
        self.reached_at: float | None = None
        # Each registry's last answer and last ratelimit-remaining, for the status page.
        self.last_answers: dict[str, float] = {}
        self.ratelimits: dict[str, int] = {}
        self._children: dict[tuple[Any, ...], Any] = {}
        self._by_route = {
            route: (self.duration.labels(route), self.response_bytes.labels(route))
            for route in ROUTES
        }

    def _child(self, metric: Any, *labels: Any) -> Any:
        """The labelled child of C{metric}, kept: labels() validates and locks each time."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*(str(label) for label in labels))
        return child

    # ------------------------------------------------------------ access events

    def observe(self, event: LogEvent) -> None:
        """Count one access event (see L{dockerproxy.accesslog.log_access})."""
        route, status, sent = event["route"], event["status"], event["bytes"]
        method = event["method"] if event["method"] in METHODS else "other"
        self._child(self.requests, route, method, status).inc()
        duration, response_bytes = self._by_route[route]
        duration.observe(event["duration"])
        response_bytes.inc(sent)
        tally = self.tally
        tally.requests += 1
        tally.served += sent
        result = event["cache"]
        kind = CACHE_KINDS.get(route)
        if kind is not None and result != "-":
            self._child(self.cache_requests, kind, result).inc()
            tally.lookups += 1
            if result in LOCAL_RESULTS:
                tally.hits += 1
        refusal = event.get("refusal")
        if refusal:
            self._child(self.refusals, refusal).inc()
        image = event.get("image")
        if image:
            self._count_image(image, route == "tag" and 200 <= status < 300, sent)

    def _count_image(self, image: str, pulled: bool, sent: int) -> None:
        images = self.tally.images
        counts = images.get(image)
        if counts is None:
            if len(images) >= MAX_IMAGES:
                image = OTHER
            counts = images.setdefault(image, [0, 0])
        counts[0] += pulled
        counts[1] += sent

    # ------------------------------------------------------------ Meters

    def upstream_answered(self, registry: str, method: bytes, response: IResponse) -> None:
        now = self.clock.seconds()
        self.reached_at = self.last_answers[registry] = now
        self._child(self.last_answer, registry).set(now)
        self._child(self.upstream_requests, registry, response.code).inc()
        length = response.length
        if method != b"HEAD" and length is not UNKNOWN_LENGTH and response.code not in (204, 304):
            self._child(self.upstream_bytes, registry).inc(length)
            self.tally.fetched += int(length)
        remaining = ratelimit_remaining(response.headers.getRawHeaders(b"ratelimit-remaining"))
        if remaining is not None:
            self._child(self.ratelimit, registry).set(remaining)
            self.tally.ratelimits[registry] = self.ratelimits[registry] = remaining

    def upstream_failed(self, registry: str, reason: str) -> None:
        self._child(self.upstream_requests, registry, reason).inc()

    def s3_failed(self, operation: str) -> None:
        self._child(self.s3_errors, operation).inc()

    def fleet_fallback(self, operation: str) -> None:
        self._child(self.fleet_fallbacks, operation).inc()

    # ------------------------------------------------------------ exposition

    def add_collector(self, collector: Collector) -> None:
        """A collector whose metrics are this process's to say (not a count to sum)."""
        self.registry.register(collector)
        self._collectors.append(collector)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format C{accept} asks for (OpenMetrics or Prometheus
        text): the body and its content type. With workers, their counts summed."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._exposed()), content_type

    def _exposed(self) -> CollectorRegistry:
        if self.multiprocess is None:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.multiprocess)
        for collector in self._collectors:
            registry.register(collector)
        return registry


def ratelimit_remaining(values: list[bytes] | None) -> int | None:
    """C{ratelimit-remaining: 76;w=21600} (Docker Hub's form) as 76; None if absent."""
    if not values:
        return None
    number = values[0].split(b";", 1)[0].strip()
    return int(number) if number.isdigit() and len(number) < 12 else None


def metric_names(registry: CollectorRegistry) -> Iterator[str]:
    """Every sample name the registry can expose (counters' C{_total}, histograms'
    C{_bucket}, C{_sum}, C{_count}, ...), whether or not a sample exists yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "info": ("_info",),
    }
    for family in registry.collect():
        yield family.name
        for suffix in suffixes.get(family.type, ()):
            yield family.name + suffix
