"""The proxy's /metrics as a test reads it: one sample of the Prometheus text."""

from __future__ import annotations

import re


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text, 0 if there is none."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition("}")[0]))
        if found == labels or (not labels and "{" not in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
