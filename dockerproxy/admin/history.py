"""The last 24 hours, a minute at a time: what the status page draws.

Once a minute the service takes the metrics' L{Tally} (what happened since the
last time) and L{History.record}s it in that minute's slot of a ring of 1,440;
the images pulled go to the hour's slot of a ring of 24. A slot holds the
minute (or hour) it is for, so one left over from more than a day ago, or from
before a restart, reads as empty. Everything is bounded: 1,440 minutes,
L{MAX_REGISTRIES} rate-limit series, L{MAX_IMAGES} images an hour (more are
counted as C{(other)}).

L{History.snapshot} and L{History.restore} turn it into a JSON document and
back, so the history survives restarts (L{dockerproxy.admin.historyfile}); a
damaged document is ignored rather than trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockerproxy.admin.metrics import MAX_IMAGES, OTHER, Tally

MINUTES = 24 * 60
HOURS = 24
MAX_REGISTRIES = 50
# The per-minute totals, in the order snapshots store them.
SERIES = ("requests", "lookups", "hits", "served", "fetched")
VERSION = 1


@dataclass(frozen=True)
class ImageCount:
    image: str
    pulls: int
    bytes: int


class History:
    """Minute totals and hourly image counts for the last day (see the module)."""

    def __init__(self) -> None:
        self.stamps = [-1] * MINUTES  # the minute (Unix time // 60) each slot holds
        self.values = {name: [0] * MINUTES for name in SERIES}
        self.ratelimits: dict[str, list[int | None]] = {}
        self.hour_stamps = [-1] * HOURS
        self.images: list[dict[str, list[int]]] = [{} for _ in range(HOURS)]

    # ------------------------------------------------------------------ recording

    def _slot(self, minute: int) -> int:
        slot = minute % MINUTES
        if self.stamps[slot] != minute:
            self.stamps[slot] = minute
            for series in self.values.values():
                series[slot] = 0
            for limits in self.ratelimits.values():
                limits[slot] = None
        return slot

    def _hour(self, hour: int) -> dict[str, list[int]]:
        slot = hour % HOURS
        if self.hour_stamps[slot] != hour:
            self.hour_stamps[slot] = hour
            self.images[slot] = {}
        return self.images[slot]

    def record(self, tally: Tally, minute: int) -> None:
        """Add C{tally} to minute C{minute} (Unix time // 60)."""
        slot = self._slot(minute)
        for name in SERIES:
            self.values[name][slot] += getattr(tally, name)
        for registry, remaining in tally.ratelimits.items():
            self._ratelimit_series(registry)[slot] = remaining
        add_images(self._hour(minute // 60), tally.images)

    def _ratelimit_series(self, registry: str) -> list[int | None]:
        series = self.ratelimits.get(registry)
        if series is None:
            if len(self.ratelimits) >= MAX_REGISTRIES:
                return [None] * MINUTES  # dropped: a throwaway series
            series = self.ratelimits[registry] = [None] * MINUTES
        return series

    # ------------------------------------------------------------------ reading

    def series(self, now_minute: int, pending: Tally | None = None) -> dict[str, Any]:
        """The last L{MINUTES} minutes up to C{now_minute}, oldest first: each series a
        list with C{None} for minutes nothing was recorded in (the proxy was not
        running); C{pending} (not recorded yet) counts in the last minute."""
        minutes = range(now_minute - MINUTES + 1, now_minute + 1)
        valid = [self.stamps[m % MINUTES] == m for m in minutes]
        out: dict[str, Any] = {}
        for name in SERIES:
            values = self.values[name]
            out[name] = [
                values[m % MINUTES] if ok else None for m, ok in zip(minutes, valid, strict=True)
            ]
        ratelimits = {
            registry: [
                values[m % MINUTES] if ok else None for m, ok in zip(minutes, valid, strict=True)
            ]
            for registry, values in sorted(self.ratelimits.items())
        }
        if pending is not None:
            for name in SERIES:
                out[name][-1] = (out[name][-1] or 0) + getattr(pending, name)
            for registry, remaining in pending.ratelimits.items():
                if registry in ratelimits or len(ratelimits) < MAX_REGISTRIES:
                    ratelimits.setdefault(registry, [None] * MINUTES)[-1] = remaining
        out["ratelimits"] = ratelimits
        return out

    def top_images(
        self, now_minute: int, count: int, pending: Tally | None = None
    ) -> tuple[list[ImageCount], list[ImageCount]]:
        """The C{count} images most pulled, and the C{count} that took most bytes, in the
        last 24 hours (the hour under way included)."""
        hour = now_minute // 60
        totals: dict[str, list[int]] = {}
        for slot, stamp in enumerate(self.hour_stamps):
            if hour - HOURS < stamp <= hour:
                add_images(totals, self.images[slot], bound=None)
        if pending is not None:
            add_images(totals, pending.images, bound=None)
        counts = [ImageCount(image, pulls, sent) for image, (pulls, sent) in totals.items()]
        by_pulls = sorted(
            (c for c in counts if c.pulls), key=lambda c: (-c.pulls, -c.bytes, c.image)
        )
        by_bytes = sorted(
            (c for c in counts if c.bytes), key=lambda c: (-c.bytes, -c.pulls, c.image)
        )
        return by_pulls[:count], by_bytes[:count]

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """The history as a JSON-ready document (only the slots in use)."""
        used = [slot for slot, stamp in enumerate(self.stamps) if stamp >= 0]
        return {
            "version": VERSION,
            "minutes": [
                [self.stamps[slot], *(self.values[name][slot] for name in SERIES)] for slot in used
            ],
            "ratelimits": {
                registry: [
                    [self.stamps[slot], series[slot]] for slot in used if series[slot] is not None
                ]
                for registry, series in self.ratelimits.items()
            },
            "hours": [
                [stamp, {image: list(c) for image, c in self.images[slot].items()}]
                for slot, stamp in enumerate(self.hour_stamps)
                if stamp >= 0
            ],
        }

    def restore(self, document: Any) -> None:
        """Load a L{snapshot}; raises C{ValueError} (nothing loaded) if it is not one."""
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise ValueError("not a status history document")
        fresh = History()
        for row in _list(document.get("minutes")):
            if not (_ints(row) and len(row) == 1 + len(SERIES)):
                raise ValueError(f"bad minute {row!r}")
            slot = fresh._slot(row[0])
            for name, value in zip(SERIES, row[1:], strict=True):
                fresh.values[name][slot] = value
        ratelimits = document.get("ratelimits")
        if not isinstance(ratelimits, dict):
            raise ValueError("bad ratelimits")
        for registry, points in list(ratelimits.items())[:MAX_REGISTRIES]:
            series = fresh._ratelimit_series(str(registry))
            for point in _list(points):
                if not (_ints(point) and len(point) == 2):
                    raise ValueError(f"bad rate limit {point!r}")
                if fresh.stamps[point[0] % MINUTES] == point[0]:
                    series[point[0] % MINUTES] = point[1]
        for row in _list(document.get("hours")):
            if not (isinstance(row, list) and len(row) == 2 and _ints(row[:1])):
                raise ValueError(f"bad hour {row!r}")
            images = row[1]
            if not isinstance(images, dict) or not all(
                _ints(c) and len(c) == 2 for c in images.values()
            ):
                raise ValueError(f"bad images of hour {row[0]!r}")
            add_images(fresh._hour(row[0]), {str(k): v for k, v in images.items()})
        self.__dict__.update(fresh.__dict__)


def add_images(
    into: dict[str, list[int]], counts: dict[str, list[int]], bound: int | None = MAX_IMAGES
) -> None:
    """Add C{counts} (image -> [pulls, bytes]) to C{into}, which keeps at most C{bound}
    images: the rest are added up under L{OTHER}."""
    for image, (pulls, sent) in counts.items():
        total = into.get(image)
        if total is None:
            key = OTHER if bound is not None and len(into) >= bound else image
            total = into.setdefault(key, [0, 0])
        total[0] += pulls
        total[1] += sent


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) > MINUTES:
        raise ValueError(f"expected a list of at most {MINUTES} items")
    return value


def _ints(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    )
