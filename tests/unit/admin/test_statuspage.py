"""The status page and its charts (L{dockerproxy.admin.statuspage}, L{charts}): the status
document rendered in each language, self-contained, gaps in the lines left as gaps."""

from __future__ import annotations

import re

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.admin.charts import line_chart, nice_max, path_data
from dockerproxy.admin.history import History
from dockerproxy.admin.metrics import Metrics, Tally
from dockerproxy.admin.status import StatusSources, status_document
from dockerproxy.admin.statuspage import STATUS_CATALOGS, format_bytes, render
from dockerproxy.digests import of
from tests.unit.cache.blobharness import Harness, Upstream
from tests.unit.fakes import scratch_dir

NOW = 1_800_000_030.0


def test_nice_max() -> None:
    assert [nice_max(v) for v in (0, 0.3, 1, 3, 7, 11, 240, 2600)] == [
        1,
        0.5,
        1,
        5,
        10,
        20,
        250,
        5000,
    ]


def test_a_gap_breaks_the_line_and_a_lone_point_is_a_dot() -> None:
    data = path_data([1, 2, None, 4, None], 4)
    assert data.count("M") == 2
    assert re.fullmatch(r"M[\d.]+ [\d.]+h0L[\d.]+ [\d.]+M[\d.]+ [\d.]+h0", data), data
    assert path_data([None, None], 1) == ""


def test_format_bytes() -> None:
    assert [format_bytes(v) for v in (0, 1023, 1536, 5 * 2**30, None)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5 GiB",
        "\u2013",
    ]


class StatusPageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.metrics = Metrics(self.clock)
        self.history = History()
        minute = int(NOW // 60)
        for back in range(10, 0, -1):
            self.history.record(
                Tally(
                    requests=back,
                    lookups=4,
                    hits=3,
                    served=10**6,
                    fetched=10**5,
                    ratelimits={"docker.io": 90 - back},
                    images={"docker.io/library/alpine": [1, 10**6]},
                ),
                minute - back,
            )
        self.harness = Harness(scratch_dir(self), max_size=10**9, clock=self.clock)
        self.harness.put(b"x" * 10)
        self.filling = Upstream(self.harness.cache, of(b"y" * 64), 64)
        self.sources = StatusSources(self.clock, self.history, self.metrics, self.harness.cache)

    def test_the_document(self) -> None:
        document = status_document(self.sources)
        minutes = document["minutes"]
        self.assertEqual(minutes["start"], (int(NOW // 60) - 1439) * 60)
        self.assertEqual(minutes["requests"][-11:], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
        self.assertEqual(minutes["cache_hit_ratio"][-2:], [0.75, None])
        self.assertEqual(minutes["ratelimit_remaining"]["docker.io"][-2], 89)
        day = document["last_24h"]
        self.assertEqual((day["requests"], day["cache_hit_ratio"]), (55, 0.75))
        self.assertEqual(day["saved_bytes"], 10 * (10**6 - 10**5))
        self.assertEqual(
            document["top_images"]["by_pulls"][0],
            {"image": "docker.io/library/alpine", "pulls": 10, "bytes": 10**7},
        )
        [fill] = document["fills"]
        self.assertEqual((fill["written_bytes"], fill["size_bytes"], fill["followers"]), (0, 64, 0))
        self.assertEqual(document["cache"]["size_bytes"], 10)
        self.assertEqual(document["cache"]["max_size_bytes"], 10**9)

    def test_the_page_in_each_language(self) -> None:
        document = status_document(self.sources)
        for lang, catalog in STATUS_CATALOGS.items():
            html = render(document, lang).decode()
            self.assertIn(f'<html lang="{catalog.tag}">', html)
            self.assertIn(catalog.texts["chart_requests"], html)
            self.assertEqual(html.count("<svg"), 4, "requests, hit ratio, bytes, rate limits")
            self.assertIn("docker.io/library/alpine", html)
            self.assertIn('<meter min="0" max="1000000000" value="10">', html)
            self.assertNotIn("<script", html)
            self.assertIsNone(
                re.search(r'(src|href)="(https?:)?//', html), "nothing from elsewhere"
            )

    def test_an_empty_proxy(self) -> None:
        empty = StatusSources(self.clock, History(), Metrics(self.clock))
        html = render(status_document(empty), "en").decode()
        texts = STATUS_CATALOGS["en"].texts
        for key in ("no_images", "no_fills", "no_ratelimit", "no_upstreams"):
            self.assertIn(texts[key], html)
        self.assertIn("--no-cache", html)

    def test_a_chart_is_labelled(self) -> None:
        chart = line_chart("Requests", [[1.0, None, 3.0]], 0, 60, str)
        self.assertEqual(chart.attributes["aria-label"], "Requests")
        self.assertEqual(chart.attributes["role"], "img")
