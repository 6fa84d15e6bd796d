"""A proxy run with C{--workers N}, seen from outside: its workers' pids, from its log."""

from __future__ import annotations

import json
import re

from tests.harness.procs import pid_alive
from tests.harness.proxy import ProxyProcess

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
STARTED_FORMAT = "worker {index} started (pid {pid})"  # the event, in a JSON log


def worker_pids(proxy: ProxyProcess) -> dict[int, int]:
    """The pid of each worker index, the latest started (a restarted worker has a new one)."""
    pids: dict[int, int] = {}
    for line in proxy.log_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("log_format") == STARTED_FORMAT:
                pids[int(event["index"])] = int(event["pid"])
        elif found := STARTED.search(line):
            pids[int(found[1])] = int(found[2])
    return pids


def live_workers(proxy: ProxyProcess) -> dict[int, int]:
    """The workers whose latest process is alive."""
    return {index: pid for index, pid in worker_pids(proxy).items() if pid_alive(pid)}
