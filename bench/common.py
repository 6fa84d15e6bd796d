"""Shared machinery of the benchmarks in bench/ (throughput.py, cache_hit.py).

Processes in their own process groups, always stopped (L{Procs}); CPU, page-fault
and RSS accounting from /proc; the incompressible test blob written straight into a
docker-registry's storage; dockerproxy started with twistd; curl downloads measured
with the CPU of the serving processes; py-spy profiles summarized; machine info.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
REPO = "bench/blob"
MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# -- processes ------------------------------------------------------------------------------


def _child_setup() -> None:
    """In the child before exec: own session (process group); die if the bench dies."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Proc:
    """A server started in its own process group, output to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_child_setup,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (nginx workers, ...): always SIGKILL what is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


class Procs:
    """Every process the bench started; ``stop_all`` stops them in reverse order."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        while self.procs:
            proc = self.procs.pop()
            try:
                proc.stop()
            except Exception as e:
                print(f"warning: stopping {proc.name}: {e}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get_head(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str]]:
    """GET path; return the status and headers, leaving the body unread."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def wait_http(port: int, path: str, proc: Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            status, _ = http_get_head(port, path, timeout=2)
            if status == 200:
                return
            last = status
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not answering 200 on {path} ({last}):\n{proc.log_tail()}")


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


# -- the blob and the registry --------------------------------------------------------------


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 1GiB, 512MiB, 100MB)")
    number, unit, binary = float(m[1]), m[2].upper(), m[3]
    base = 1024 if binary or not unit else 1000
    return int(number * base ** " KMGT".index(unit or " "))


def write_blob(storage: Path, size: int, seed: int = 20261127) -> str:
    """Write C{size} bytes of pseudo-random data into registry storage; return its hex digest.

    A 1 MiB random block, rotated by a different offset for each chunk: deterministic,
    incompressible to gzip/zstd-style compressors, and never held in memory as a whole.
    """
    block = random.Random(seed).randbytes(MiB)
    blobs = storage / "docker/registry/v2/blobs/sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / "incoming.tmp"
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        written, i = 0, 0
        while written < size:
            off = (i * 7919 * 64) % MiB
            chunk = block[off:] + block[:off]
            chunk = chunk[: size - written]
            digest.update(chunk)
            f.write(chunk)
            written += len(chunk)
            i += 1
    hexdigest = digest.hexdigest()
    target = blobs / hexdigest[:2] / hexdigest
    target.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target / "data")
    link = storage / f"docker/registry/v2/repositories/{REPO}/_layers/sha256/{hexdigest}"
    link.mkdir(parents=True, exist_ok=True)
    (link / "link").write_text(f"sha256:{hexdigest}")
    return hexdigest


NGINX_CONF = """\
# {comment}
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;

{http}
}}
"""


def start_nginx(
    procs: Procs,
    work: Path,
    name: str,
    http: Callable[[int], str],
    workers: str = "1",
    comment: str = "",
) -> tuple[Proc, int]:
    """nginx with everything under C{work/name}; C{http(port)} is its http block's body."""
    d = work / name
    (d / "tmp").mkdir(parents=True)
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            comment=comment,
            workers=workers,
            dir=d,
            http=http(port),
            # As root, nginx's workers would run as "nobody"; keep them as the current user.
            user="user root;" if os.geteuid() == 0 else "",
        )
    )
    proc = procs.start(
        Proc(name, ["nginx", "-p", d, "-e", d / "error.log", "-c", conf, "-g", "daemon off;"], work)
    )
    wait_http(port, "/v2/", proc)
    return proc, port


def start_registry(procs: Procs, work: Path, access_log: bool = False) -> tuple[Proc, int, Path]:
    """docker-registry on a free port, storage in C{work}; C{access_log} logs every request."""
    storage = work / "registry-storage"
    storage.mkdir()
    port = free_port()
    config = {
        "version": "0.1",
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": not access_log}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "maintenance": {"uploadpurging": {"enabled": False}},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "bench-http-secret"},
    }
    config_path = work / "registry.yml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    proc = procs.start(Proc("registry", ["docker-registry", "serve", config_path], work))
    wait_http(port, "/v2/", proc)
    return proc, port, storage


# -- dockerproxy ----------------------------------------------------------------------------


def start_proxy(
    procs: Procs,
    work: Path,
    upstream_port: int,
    src: Path | None,
    args: Sequence[str],
    extra_env: Sequence[str] = (),
    code_module: str = "dockerproxy.relay",
) -> tuple[Proc, int]:
    """twistd dockerproxy on a free port in front of C{upstream_port}, plus C{args}.

    With C{src}, the package is imported from C{src}/dockerproxy; C{code_module} is the
    module whose file is printed (and checked to come from C{src}).
    """
    port = free_port()
    env = dict(os.environ)
    env.pop("DOCKERPROXY_CONFIG", None)
    for item in extra_env:
        key, _, value = item.partition("=")
        env[key] = value
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    argv = [
        VENV_BIN / "twistd",
        "-n",
        "--pidfile=",
        "dockerproxy",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--upstream",
        f"http://127.0.0.1:{upstream_port}",
        "--no-library-prefix",
        *args,
    ]
    code_file = imported_file(env, work, code_module)
    if src is not None and not Path(code_file).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(f"--proxy-src {src}: the proxy would import {code_file}")
    print(f"dockerproxy {code_module.rpartition('.')[2]} code: {code_file}", flush=True)
    # cwd=work: twistd must not pick anything up from the current directory.
    proc = procs.start(Proc("dockerproxy", argv, work, env=env, cwd=work))
    wait_http(port, "/v2/", proc)
    return proc, port


def imported_file(env: dict[str, str], cwd: Path, module: str) -> str:
    """The file of C{module} the proxy's interpreter imports with this environment."""
    out = subprocess.run(
        [VENV_BIN / "python", "-c", f"import {module} as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=True,
    )
    return out.stdout.strip()


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    pgid: int  # process group of the serving processes (for CPU accounting)
    note: str = ""
    results: list[dict[str, object]] = field(default_factory=list)


def curl_download(url: str, expected: int, timeout: float) -> dict[str, object]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "curl",
            "-s",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download} %{size_download} %{http_code} %{time_total}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 4:
        raise RuntimeError(
            f"curl {url} failed (exit {out.returncode}): {out.stdout!r} {out.stderr!r}"
        )
    speed, size, code, total = float(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
    if code != 200 or size != expected:
        raise RuntimeError(
            f"curl {url}: status {code}, {size} bytes, expected 200 and {expected} bytes"
        )
    curl_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "mb_s": speed / 1e6,
        "bytes": size,
        "status": code,
        "seconds": total,
        "curl_cpu_s": curl_cpu,
    }


def measure(
    target: Target, path: str, expected: int, registry_pgid: int, timeout: float
) -> dict[str, object]:
    u0, s0, f0 = group_stats(target.pgid)
    reg0 = sum(group_stats(registry_pgid)[:2])
    busy0 = system_busy_ticks()
    r = curl_download(f"http://127.0.0.1:{target.port}{path}", expected, timeout)
    busy1 = system_busy_ticks()
    u1, s1, f1 = group_stats(target.pgid)
    reg1 = sum(group_stats(registry_pgid)[:2])
    seconds = float(r["seconds"]) or 1e-9  # type: ignore[arg-type]
    ours = (u1 - u0) + (s1 - s0) + float(r["curl_cpu_s"])  # type: ignore[arg-type]
    if target.pgid != registry_pgid:
        ours += reg1 - reg0
    # CPU used by anything else on the machine meanwhile (other jobs): a noisy run.
    r["foreign_cores"] = round(max(0.0, (busy1 - busy0) / CLK_TCK - ours) / seconds, 2)
    r["server_user_s"] = round(u1 - u0, 3)
    r["server_sys_s"] = round(s1 - s0, 3)
    r["server_minflt"] = f1 - f0
    r["server_cpu_s"] = round((u1 - u0) + (s1 - s0), 3)
    r["server_cores"] = ((u1 - u0) + (s1 - s0)) / seconds
    r["registry_cores"] = (reg1 - reg0) / seconds
    return r


# -- profiling ------------------------------------------------------------------------------


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


# -- reporting ------------------------------------------------------------------------------


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


def summarize(target: Target, reference: float | None) -> dict[str, object]:
    speeds = [float(r["mb_s"]) for r in target.results]  # type: ignore[arg-type]
    med = statistics.median(speeds)
    cores = statistics.median(float(r["server_cores"]) for r in target.results)  # type: ignore[arg-type]
    reg = statistics.median(float(r["registry_cores"]) for r in target.results)  # type: ignore[arg-type]
    gb = [int(r["bytes"]) / 1e9 for r in target.results]  # type: ignore[call-overload]
    cpu_per_gb = statistics.median(
        float(r["server_cpu_s"]) / g  # type: ignore[arg-type]
        for r, g in zip(target.results, gb, strict=True)
    )
    sys_share = statistics.median(
        float(r["server_sys_s"]) / max(float(r["server_cpu_s"]), 1e-9)  # type: ignore[arg-type]
        for r in target.results
    )
    minflt = statistics.median(int(r["server_minflt"]) for r in target.results)  # type: ignore[call-overload]
    return {
        "target": target.name,
        "note": target.note,
        "median_mb_s": round(med, 1),
        "server_cpu_s_per_gb": round(cpu_per_gb, 3),
        "server_sys_share": round(sys_share, 2),
        "server_minflt_median": minflt,
        "foreign_cores_max": max(float(r["foreign_cores"]) for r in target.results),  # type: ignore[arg-type]
        "min_mb_s": round(min(speeds), 1),
        "max_mb_s": round(max(speeds), 1),
        "ratio_to_nginx": round(med / reference, 3) if reference else None,
        "server_cpu_cores_median": round(cores, 2),
        "registry_cpu_cores_median": round(reg, 2),
        "runs": speeds,
    }


def print_table(rows: list[dict[str, object]]) -> None:
    print(
        "| target | median MB/s | min | max | ratio to nginx | server CPU (cores) "
        "| server CPU s/GB (% sys) | server minor faults | registry CPU (cores) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['ratio_to_nginx']:.2f}" if r["ratio_to_nginx"] is not None else "-"
        name = f"{r['target']}{' (' + str(r['note']) + ')' if r['note'] else ''}"
        print(
            f"| {name} | {r['median_mb_s']:.0f} | {r['min_mb_s']:.0f} | {r['max_mb_s']:.0f} "
            f"| {ratio} | {r['server_cpu_cores_median']:.2f} "
            f"| {r['server_cpu_s_per_gb']:.2f} ({100 * r['server_sys_share']:.0f}%) "
            f"| {r['server_minflt_median']:.0f} | {r['registry_cpu_cores_median']:.2f} |"
        )


def print_machine(info: dict[str, object]) -> None:
    print("| machine | |")
    print("|---|---|")
    for k, v in info.items():
        print(f"| {k} | {v} |")


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


def finish_report(
    info: dict[str, object], result: dict[str, Any], path: Path, profile: bool
) -> None:
    """The report's tail: machine info, the profile if taken, and the JSON results file."""
    print_machine(info)
    if profile:
        print_profile(result["profile"]["summary"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {path}")


def raise_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM / SIGHUP handler: unwind like Ctrl-C, so every process is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def session(prefix: str, keep_tmp: bool) -> Iterator[tuple[Procs, Path]]:
    """The processes and temp dir of one benchmark: stopped and removed however it ends.

    SIGTERM and SIGHUP unwind like Ctrl-C, so no registry, nginx or proxy outlives it.
    """
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    RESULTS.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield procs, work
    finally:
        procs.stop_all()
        if keep_tmp:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


# -- what both benchmarks share: options, the measured rounds, profiling, the report head ------


def add_common_args(
    p: argparse.ArgumentParser, *, json_name: str, profiled: str, profile_prefix: str
) -> None:
    """The options every benchmark takes: the blob, the rounds, the proxy under test, py-spy."""
    p.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("1GiB"),
        help="blob size, e.g. 1GiB, 256MiB (default 1GiB)",
    )
    p.add_argument("--runs", type=int, default=5, help="measured runs per target (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1)")
    p.add_argument(
        "--proxy-src",
        type=Path,
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
        help="before each download wait up to this long for the machine to be "
        "idle (other jobs skew the numbers); 0 disables (default 30)",
    )
    p.add_argument("--label", default="", help="a label stored in the JSON (for experiments)")
    p.add_argument(
        "--json",
        type=Path,
        default=RESULTS / json_name,
        help=f"where to write results (default bench/results/{json_name})",
    )
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
    p.add_argument("--timeout", type=float, default=600, help="per-download timeout (s)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, blob)")


def run_info(
    args: argparse.Namespace, hexdigest: str, info: dict[str, object]
) -> dict[str, object]:
    """The head of a results file: what was measured, how, and on which machine."""
    return {
        "label": args.label,
        "size_bytes": args.size,
        "runs": args.runs,
        "warmup": args.warmup,
        "digest": f"sha256:{hexdigest}",
        "machine": info,
        "proxy_src": str(args.proxy_src) if args.proxy_src else None,
        "proxy_args": args.proxy_arg,
        "proxy_env": args.proxy_env,
    }


def measure_rounds(
    targets: Sequence[Target], path: str, args: argparse.Namespace, registry_pgid: int, rounds: int
) -> None:
    """C{rounds} interleaved downloads from every target, warm-ups first and not kept.

    Interleaving spreads slow phases of the machine over all targets alike; each
    download first waits (up to C{--quiet-wait}) for the machine to be idle.
    """
    width = max(len(t.name) for t in targets)
    for i in range(rounds):
        warm = i < args.warmup
        for target in targets:
            if args.quiet_wait > 0:
                wait_for_quiet(0.15, args.quiet_wait)
            r = measure(target, path, args.size, registry_pgid, args.timeout)
            tag = "warm-up" if warm else f"run {i - args.warmup + 1}/{args.runs}"
            print(
                f"{tag:>9} {target.name:<{width}} {float(r['mb_s']):8.1f} MB/s  "  # type: ignore[arg-type]
                f"{float(r['seconds']):6.2f}s  server {float(r['server_cores']):.2f} "  # type: ignore[arg-type]
                f"cores (user/sys {r['server_user_s']}/{r['server_sys_s']}s)  registry "
                f"{float(r['registry_cores']):.2f}  curl {float(r['curl_cpu_s']):.2f}s CPU  "  # type: ignore[arg-type]
                f"minflt {r['server_minflt']}  other {r['foreign_cores']} cores",
                flush=True,
            )
            if not warm:
                target.results.append(r)


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


def print_heading(title: str, args: argparse.Namespace) -> None:
    print()
    print(
        f"## {title} ({args.size / MiB:.0f} MiB blob, {args.runs} interleaved runs after "
        f"{args.warmup} warm-up, median; MB = 10^6 bytes)"
    )
    if args.label:
        print(f"label: {args.label}")
    print()
