"""A proxy run with C{--workers N}, seen from outside: its workers' pids, from its log."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

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


def ready_workers(log: str) -> int:
    """How many times a worker said it is ready (serving, and reloading on SIGHUP)."""
    return sum("is ready" in line for line in log.splitlines())


def live_workers(proxy: ProxyProcess) -> dict[int, int]:
    """The workers whose latest process is alive."""
    return {index: pid for index, pid in worker_pids(proxy).items() if pid_alive(pid)}


def client_connections(pid: int, port: int) -> int:
    """How many established TCP connections to C{port} process C{pid} holds (Linux /proc):
    which worker the kernel gave the clients to."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count
