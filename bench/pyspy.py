"""Profiling dockerproxy with py-spy: one download recorded per output format (raw
collapsed stacks and a flame graph), and the reactor thread's top functions.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from measuring import curl_download
from processes import RESULTS, ROOT, VENV_BIN, Proc, Procs


def py_spy_record(
    procs: Procs,
    work: Path,
    pid: int,
    url: str,
    expected: int,
    out: Path,
    fmt: str,
    rate: int,
    native: bool,
    timeout: float,
) -> dict[str, object]:
    argv = [
        VENV_BIN / "py-spy",
        "record",
        "--pid",
        pid,
        "--rate",
        rate,
        "--format",
        fmt,
        "--output",
        out,
        "--idle",
    ]
    if fmt == "raw":
        argv.append("--function")  # aggregate by function, not by line
    if native:
        argv.append("--native")  # needs to pause the process for each sample
    else:
        argv.append("--nonblocking")  # do not pause the proxy while sampling
    spy = procs.start(Proc(f"py-spy-{fmt}", argv, work))
    try:
        deadline = time.monotonic() + 15
        while "Sampling process" not in spy.log_path.read_text(errors="replace"):
            if not spy.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"py-spy did not start:\n{spy.log_tail()}")
            time.sleep(0.05)
        result = curl_download(url, expected, timeout)
    finally:
        spy.signal(signal.SIGINT)  # py-spy writes its output when interrupted
        with contextlib.suppress(subprocess.TimeoutExpired):
            assert spy.popen is not None
            spy.popen.wait(30)
        spy.stop()
        procs.procs.remove(spy)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote no {out}:\n{spy.log_tail()}")
    return result


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short_frame(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m['func']} ({file}{':' + m['line'] if m['line'] else ''})"


def summarize_raw(path: Path, top: int = 20) -> dict[str, object]:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks.

    Only the reactor (main) thread counts: Twisted's thread-pool workers sit idle in
    C{Condition.wait} and would halve every percentage. Samples whose leaf is the
    reactor's C{doPoll} are the reactor waiting in epoll (idle); py-spy samples C
    code as the Python line that called it, so C{untilConcludes} is the C{send()}
    syscall and C{Connection.doRead} the C{recv()} syscall.
    """
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    tail_counts: Counter[str] = Counter()
    total = other_threads = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if any(f.startswith("Thread._bootstrap ") for f in frames):
            other_threads += count
            continue
        total += count
        self_counts[frames[-1]] += count
        tail_counts[" <- ".join(reversed(frames[-3:]))] += count
        for f in set(frames):
            incl_counts[f] += count

    def rows(counter: Counter[str]) -> list[dict[str, object]]:
        return [
            {"function": f, "samples": n, "percent": round(100 * n / max(total, 1), 1)}
            for f, n in counter.most_common(top)
        ]

    # Frames on every reactor-thread stack (twistd's startup, the reactor's run loop)
    # say nothing about where the time goes.
    everywhere = [f for f, n in incl_counts.items() if n >= 0.99 * total]
    for f in everywhere:
        del incl_counts[f]
    return {
        "total_samples": total,
        "other_thread_samples": other_threads,
        "self": rows(self_counts),
        "inclusive": rows(incl_counts),
        "self_with_callers": rows(tail_counts),
    }


def profile_downloads(
    procs: Procs, work: Path, pid: int, url: str, args: argparse.Namespace
) -> dict[str, object]:
    """One download per py-spy format (raw text, flamegraph), and the summary of the raw one."""
    prof: dict[str, object] = {}
    for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
        out = RESULTS / f"{args.profile_prefix}.{suffix}"
        r = py_spy_record(
            procs,
            work,
            pid,
            url,
            args.size,
            out,
            fmt,
            args.profile_rate,
            args.profile_native,
            args.timeout,
        )
        prof[fmt] = {"file": str(out.relative_to(ROOT)), "mb_s": r["mb_s"]}
        print(
            f"profiled download ({fmt}): {float(r['mb_s']):.1f} MB/s -> {out}",  # type: ignore[arg-type]
            flush=True,
        )
    prof["summary"] = summarize_raw(RESULTS / f"{args.profile_prefix}.txt")
    return prof


def print_profile(summary: dict[str, Any]) -> None:
    """Markdown tables of a L{summarize_raw} result."""
    print()
    print(
        f"### py-spy: top functions by self time (reactor thread: "
        f"{summary['total_samples']} samples, epoll idle included; "
        f"{summary['other_thread_samples']} idle thread-pool samples left out)"
    )
    print()
    print("| % self | function |")
    print("|---:|---|")
    for row in summary["self"][:15]:
        print(f"| {row['percent']} | `{row['function']}` |")
    print()
    print("### py-spy: top functions by inclusive time (frames on every stack left out)")
    print()
    print("| % incl | function |")
    print("|---:|---|")
    for row in summary["inclusive"][:15]:
        print(f"| {row['percent']} | `{row['function']}` |")
    print()
    print("### py-spy: self time with its two callers")
    print()
    print("| % self | leaf <- caller <- caller |")
    print("|---:|---|")
    for row in summary["self_with_callers"][:12]:
        print(f"| {row['percent']} | `{row['function']}` |")
