"""contrib/grafana/dockerproxy.json asks only for metrics the proxy has: every
C{dockerproxy_*} (and C{process_*}) name in its PromQL is one the registry exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.admin.collectors import StateCollector
from dockerproxy.admin.metrics import Metrics, metric_names
from dockerproxy.listeners import ConnectionLimit
from tests.unit.cache.blobharness import Harness
from tests.unit.fakes import scratch_dir

DASHBOARD = Path(__file__).resolve().parents[3] / "contrib" / "grafana" / "dockerproxy.json"
NAME = re.compile(r"\b((?:dockerproxy|process)_[a-zA-Z0-9_]+)")


def expressions(node: Any) -> list[str]:
    """Every C{expr} and C{query} string anywhere in the dashboard."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "query") and isinstance(v, str)]
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


class DashboardTests(SynchronousTestCase):
    def exposed(self) -> set[str]:
        harness = Harness(scratch_dir(self), max_size=10**6)
        metrics = Metrics(harness.clock)
        state = StateCollector()
        state.blobs = harness.cache
        state.connections = ConnectionLimit(10, lambda: None, lambda: None, Clock())
        metrics.registry.register(state)
        return set(metric_names(metrics.registry))

    def test_every_metric_the_dashboard_asks_for_exists(self) -> None:
        dashboard = json.loads(DASHBOARD.read_text())
        used = {name for expr in expressions(dashboard) for name in NAME.findall(expr)}
        self.assertGreater(len(used), 15)
        self.assertEqual(used - self.exposed(), set())

    def test_the_check_sees_a_misspelt_metric(self) -> None:
        used = set(NAME.findall('rate(dockerproxy_request_total{job="x"}[5m])'))
        self.assertEqual(used - self.exposed(), {"dockerproxy_request_total"})

    def test_the_panels_have_titles_and_queries(self) -> None:
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in dashboard["panels"]:
            self.assertTrue(panel["title"])
            self.assertTrue(all(t["expr"] for t in panel["targets"]), panel["title"])
