"""What every benchmark does around its measurements: the options they all take, and
its run: the tools checked, the machine described, the registry started with the blobs,
and every process stopped and the temp dir removed however the run ends.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from processes import RESULTS, Procs, session
from registry import Registry, start_registry
from report import machine_info

# The Debian package of each tool a benchmark runs.
PACKAGES = {"curl": "curl", "nginx": "nginx-light", "docker-registry": "docker-registry"}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 1GiB, 512MiB, 100MB)")
    number, unit, binary = float(m[1]), m[2].upper(), m[3]
    base = 1024 if binary or not unit else 1000
    return int(number * base ** " KMGT".index(unit or " "))


def add_common_args(
    p: argparse.ArgumentParser,
    *,
    json_name: str,
    runs: int = 5,
    runs_help: str = "measured runs per target",
    warmup: bool = True,
    profiled: str | None = None,
    profile_prefix: str = "profile",
) -> None:
    """The options every benchmark takes: the blob, the rounds, the proxy under test, the
    results file; C{--warmup} unless C{warmup} is false (then C{args.warmup} is 0), and
    py-spy's options where a C{profiled} download can be recorded (else C{args.profile}
    is false).
    """
    p.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("1GiB"),
        help="blob size, e.g. 1GiB, 256MiB (default 1GiB)",
    )
    p.add_argument("--runs", type=int, default=runs, help=f"{runs_help} (default {runs})")
    if warmup:
        p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1)")
    else:
        p.set_defaults(warmup=0)
    p.add_argument(
        "--proxy-src",
        type=lambda text: Path(text).resolve(),
        metavar="DIR",
        default=None,
        help="run dockerproxy from DIR/dockerproxy (put first on PYTHONPATH)",
    )
    p.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        help="extra twistd dockerproxy argument (repeatable)",
    )
    p.add_argument(
        "--proxy-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable for dockerproxy (repeatable), e.g. "
        "MALLOC_MMAP_THRESHOLD_=8388608",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each measured download or run wait up to this long for the machine "
        "to be idle (other jobs skew the numbers); 0 disables (default 30)",
    )
    p.add_argument("--label", default="", help="a label stored in the JSON (for experiments)")
    p.add_argument(
        "--json",
        type=Path,
        default=RESULTS / json_name,
        help=f"where to write results (default bench/results/{json_name})",
    )
    if profiled is not None:
        add_profile_args(p, profiled, profile_prefix)
    else:
        p.set_defaults(profile=False)
    p.add_argument("--timeout", type=float, default=600, help="per-download timeout (s)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, blobs)")


def add_profile_args(p: argparse.ArgumentParser, profiled: str, profile_prefix: str) -> None:
    p.add_argument(
        "--profile",
        action="store_true",
        help=f"after the runs, record one {profiled} download with py-spy "
        f"(bench/results/{profile_prefix}.svg and .txt)",
    )
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s (200)")
    p.add_argument(
        "--profile-native", action="store_true", help="include native (C) frames in the profile"
    )
    p.add_argument(
        "--profile-prefix",
        default=profile_prefix,
        help=f"file name prefix in bench/results (default '{profile_prefix}')",
    )


@dataclass
class Bench:
    """One benchmark's run: its options, processes, temp dir, machine and registry."""

    args: argparse.Namespace
    procs: Procs
    work: Path
    info: dict[str, object]  # the machine, described before anything started
    registry: Registry

    def results_head(self) -> dict[str, object]:
        """The head of a results file: what was measured, how, and on which machine."""
        args = self.args
        digests = [f"sha256:{d}" for d in self.registry.digests]
        return {
            "label": args.label,
            "size_bytes": args.size,
            "runs": args.runs,
            "warmup": args.warmup,
            **({"digest": digests[0]} if len(digests) == 1 else {"digests": digests}),
            "machine": self.info,
            "proxy_src": str(args.proxy_src) if args.proxy_src else None,
            "proxy_args": args.proxy_arg,
            "proxy_env": args.proxy_env,
        }


def run_bench(
    args: argparse.Namespace,
    run: Callable[[Bench], int],
    *,
    prefix: str,
    tools: Sequence[str],
    blobs: int = 1,
    access_log: bool = False,
) -> int:
    """A benchmark's C{main}: C{run} with the registry up and C{blobs} blobs of C{--size}
    in it (C{access_log}: it logs every request); every process it started is stopped
    and its temp dir removed however it ends, and an interrupt exits 130.
    """
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        print(
            f"needs {' and '.join(missing)}: "
            f"apt-get install -y {' '.join(PACKAGES[tool] for tool in missing)}",
            file=sys.stderr,
        )
        return 2
    try:
        with session(prefix, args.keep_tmp) as (procs, work):
            info = machine_info()
            registry = start_registry(procs, work, args.size, blobs, access_log)
            return run(Bench(args, procs, work, info, registry))
    except KeyboardInterrupt:
        print("interrupted: everything stopped", file=sys.stderr)
        return 130
