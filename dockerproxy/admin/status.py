"""What C{/status} shows and C{/status.json} answers: one document for both.

The page (L{dockerproxy.admin.statuspage}) renders this very document, so the
two always say the same. Its minute series run over the last 24 hours, oldest
first, with C{null} for minutes the proxy was not running; what happened in the
minute under way (not yet recorded by the history) counts in the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from dockerproxy.admin.history import MINUTES, History, ImageCount
from dockerproxy.admin.metrics import Metrics

if TYPE_CHECKING:
    from dockerproxy.cache.blobs import BlobCache

TOP_IMAGES = 10
MAX_FILLS = 50  # fills listed, largest first


@dataclass
class StatusSources:
    """Where the status comes from: the history, the metrics, the cache if any."""

    clock: IReactorTime
    history: History
    metrics: Metrics
    blobs: BlobCache | None = None


def status_document(sources: StatusSources) -> dict[str, Any]:
    now = sources.clock.seconds()
    minute = int(now // 60)
    pending = sources.metrics.tally
    series = sources.history.series(minute, pending)
    ratio = [
        None if lookups is None or not lookups else round((hits or 0) / lookups, 4)
        for hits, lookups in zip(series["hits"], series["lookups"], strict=True)
    ]
    by_pulls, by_bytes = sources.history.top_images(minute, TOP_IMAGES, pending)
    totals = {name: sum(v for v in series[name] if v) for name in series if name != "ratelimits"}
    return {
        "generated": now,
        "minutes": {
            "start": (minute - MINUTES + 1) * 60,
            "step": 60,
            "requests": series["requests"],
            "cache_lookups": series["lookups"],
            "cache_hits": series["hits"],
            "cache_hit_ratio": ratio,
            "served_bytes": series["served"],
            "upstream_bytes": series["fetched"],
            "ratelimit_remaining": series["ratelimits"],
        },
        "last_24h": {
            "requests": totals["requests"],
            "cache_lookups": totals["lookups"],
            "cache_hits": totals["hits"],
            "cache_hit_ratio": (
                round(totals["hits"] / totals["lookups"], 4) if totals["lookups"] else None
            ),
            "served_bytes": totals["served"],
            "upstream_bytes": totals["fetched"],
            "saved_bytes": max(totals["served"] - totals["fetched"], 0),
        },
        "top_images": {"by_pulls": _images(by_pulls), "by_bytes": _images(by_bytes)},
        "fills": _fills(sources.blobs),
        "cache": _cache(sources.blobs),
        "upstreams": [
            {
                "registry": registry,
                "last_answer": sources.metrics.last_answers.get(registry),
                "ratelimit_remaining": sources.metrics.ratelimits.get(registry),
            }
            for registry in sorted(
                sources.metrics.last_answers.keys() | sources.metrics.ratelimits.keys()
            )
        ],
    }


def _images(counts: list[ImageCount]) -> list[dict[str, Any]]:
    return [{"image": c.image, "pulls": c.pulls, "bytes": c.bytes} for c in counts]


def _fills(blobs: BlobCache | None) -> list[dict[str, Any]]:
    if blobs is None:
        return []
    fills = sorted(blobs.fills_in_progress(), key=lambda f: (-f.written, str(f.digest)))
    return [
        {
            "digest": str(fill.digest),
            "written_bytes": fill.written,
            "size_bytes": fill.length,
            "followers": fill.followers,
        }
        for fill in fills[:MAX_FILLS]
    ]


def _cache(blobs: BlobCache | None) -> dict[str, Any] | None:
    if blobs is None:
        return None
    stats = blobs.stats()
    return {
        "size_bytes": stats["used_bytes"],
        "max_size_bytes": stats["max_size"],
        "blobs": stats["blobs"],
        "fills_in_progress": stats["active_fills"],
    }
