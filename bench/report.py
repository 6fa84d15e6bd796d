"""The report's frame: the machine it ran on, and the results written as JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyspy import print_profile


def cmd_output(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine_info() -> dict[str, object]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import treq

    import twisted

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "treq": treq.__version__,
        "nginx": cmd_output(["nginx", "-v"]).replace("nginx version: ", ""),
        "docker_registry": cmd_output(["docker-registry", "--version"]),
        "curl": cmd_output(["curl", "--version"]),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "memory_total_mb": int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e6),
    }


def print_machine(info: dict[str, object]) -> None:
    print("| machine | |")
    print("|---|---|")
    for k, v in info.items():
        print(f"| {k} | {v} |")


def finish_report(
    info: dict[str, object], result: dict[str, Any], args: argparse.Namespace
) -> None:
    """The report's tail: machine info, the profile if taken, and the JSON results file."""
    print_machine(info)
    if args.profile:
        print_profile(result["profile"]["summary"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {args.json}")
