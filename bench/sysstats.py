"""What the machine and a process group are doing, from /proc: CPU seconds, page
faults, busy cores, RSS. The measurements count the serving processes' CPU and check
that the machine is quiet before each download.
"""

from __future__ import annotations

import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def group_stats(pgid: int) -> tuple[float, float, int]:
    """(user CPU s, system CPU s, minor page faults) summed over process group C{pgid}."""
    utime = stime = minflt = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
        if int(fields[2]) == pgid:
            minflt += int(fields[7])
            utime += int(fields[11])
            stime += int(fields[12])
    return utime / CLK_TCK, stime / CLK_TCK, minflt


def main_thread_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process C{pid}'s main thread (the proxy's reactor)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_ticks() -> int:
    """Busy (non-idle) jiffies summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle


def wait_for_quiet(max_busy_cores: float, max_wait: float, probe: float = 0.5) -> float:
    """Wait (at most C{max_wait} s) until the machine is nearly idle; return busy cores seen."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = system_busy_ticks()
        time.sleep(probe)
        b1 = system_busy_ticks()
        busy = (b1 - b0) / CLK_TCK / probe
        if busy <= max_busy_cores or time.monotonic() >= deadline:
            return busy
        time.sleep(0.5)


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RSSSampler(threading.Thread):
    """Samples a process's VmRSS every C{interval} seconds; remembers the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                with open(f"/proc/{self.pid}/statm") as f:
                    rss_kb = int(f.read().split()[1]) * PAGE_KB
            except (OSError, ValueError, IndexError):
                rss_kb = 0
            self.peak_kb = max(self.peak_kb, rss_kb)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)
