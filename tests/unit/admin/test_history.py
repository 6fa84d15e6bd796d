"""The status history (L{dockerproxy.admin.history}): a day of minutes in a bounded ring,
images by the hour, and the JSON document that carries it over a restart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockerproxy.admin.history import HOURS, MAX_REGISTRIES, MINUTES, History
from dockerproxy.admin.metrics import MAX_IMAGES, OTHER, Tally

NOW = 29_000_040  # a minute number (Unix time // 60), at the start of an hour
assert NOW % 60 == 0


def tally(requests: int = 1, **images: list[int]) -> Tally:
    return Tally(requests=requests, lookups=2, hits=1, served=100, fetched=10, images=dict(images))


def test_minutes_are_recorded_in_order_with_gaps_as_none() -> None:
    history = History()
    history.record(tally(3), NOW - 2)
    history.record(tally(5), NOW)
    series = history.series(NOW)
    assert len(series["requests"]) == MINUTES
    assert series["requests"][-3:] == [3, None, 5]
    assert series["served"][-1] == 100
    assert series["requests"][: MINUTES - 3] == [None] * (MINUTES - 3)


def test_two_samples_of_one_minute_add_up() -> None:
    history = History()
    history.record(tally(3), NOW)
    history.record(tally(4), NOW)
    assert history.series(NOW)["requests"][-1] == 7


def test_a_day_old_slot_reads_as_empty_and_is_reused() -> None:
    history = History()
    history.record(tally(9), NOW - MINUTES)
    assert history.series(NOW)["requests"] == [None] * MINUTES
    history.record(tally(2), NOW)
    assert history.series(NOW)["requests"][-1] == 2, "not 9 + 2"


def test_the_pending_tally_counts_in_the_last_minute() -> None:
    history = History()
    pending = tally(4)
    pending.ratelimits = {"docker.io": 70}
    series = history.series(NOW, pending)
    assert series["requests"][-1] == 4
    assert series["ratelimits"] == {"docker.io": [None] * (MINUTES - 1) + [70]}
    assert history.series(NOW)["requests"][-1] is None, "the history itself is unchanged"


def test_rate_limits_per_registry_bounded() -> None:
    history = History()
    for i in range(MAX_REGISTRIES + 3):
        history.record(Tally(ratelimits={f"r{i}": i}), NOW)
    assert len(history.ratelimits) == MAX_REGISTRIES
    assert history.series(NOW)["ratelimits"]["r1"][-1] == 1


def test_top_images_over_the_last_24_hours() -> None:
    history = History()
    history.record(tally(a=[1, 500], b=[3, 10]), NOW - 60 * HOURS)  # a day ago: gone
    history.record(tally(a=[2, 100], b=[1, 10]), NOW - 120)
    history.record(tally(a=[1, 100], c=[0, 1000]), NOW)
    by_pulls, by_bytes = history.top_images(NOW, 10, pending=tally(b=[1, 0]))
    assert [(c.image, c.pulls, c.bytes) for c in by_pulls] == [("a", 3, 200), ("b", 2, 10)]
    assert [c.image for c in by_bytes] == ["c", "a", "b"]
    assert len(history.top_images(NOW, 1)[1]) == 1


def test_images_per_hour_are_bounded() -> None:
    history = History()
    history.record(tally(**{f"i{n}": [1, 1] for n in range(MAX_IMAGES)}), NOW)
    history.record(tally(late=[2, 2], i0=[1, 1]), NOW + 1)
    bucket = history.images[(NOW // 60) % HOURS]
    assert len(bucket) == MAX_IMAGES + 1
    assert bucket[OTHER] == [2, 2]
    assert bucket["i0"] == [2, 2]


def test_a_snapshot_restores_the_same_history() -> None:
    history = History()
    history.record(tally(3, a=[1, 5]), NOW - 1)
    history.record(Tally(requests=1, ratelimits={"docker.io": 99}), NOW)
    document = json.loads(json.dumps(history.snapshot()))
    restored = History()
    restored.restore(document)
    assert restored.series(NOW) == history.series(NOW)
    assert restored.top_images(NOW, 5) == history.top_images(NOW, 5)


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        {"version": 2, "minutes": [], "ratelimits": {}, "hours": []},
        {"version": 1, "minutes": [[NOW, 1]], "ratelimits": {}, "hours": []},
        {"version": 1, "minutes": [[NOW, 1, 2, 3, 4, -5]], "ratelimits": {}, "hours": []},
        {"version": 1, "minutes": [[NOW, 1, 2, 3, 4, "5"]], "ratelimits": {}, "hours": []},
        {"version": 1, "minutes": [], "ratelimits": [], "hours": []},
        {"version": 1, "minutes": [], "ratelimits": {"r": [[NOW]]}, "hours": []},
        {"version": 1, "minutes": [], "ratelimits": {}, "hours": [[1, {"a": [1]}]]},
        {
            "version": 1,
            "minutes": [[0, 1, 1, 1, 1, 1]] * (MINUTES + 1),
            "ratelimits": {},
            "hours": [],
        },
    ],
)
def test_a_damaged_document_is_refused_and_changes_nothing(document: Any) -> None:
    history = History()
    history.record(tally(7), NOW)
    with pytest.raises(ValueError):
        history.restore(document)
    assert history.series(NOW)["requests"][-1] == 7
