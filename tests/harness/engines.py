"""Running real engines and clients (dockerd, containerd, podman, chromium) and cleaning up after.

Shared by ``daemons`` and ``browser``:

- ``run()`` runs a client command to completion in a process group of its own, with output in
  files rather than pipes (a helper that outlives the command cannot hold ``run`` up), and kills
  whatever the command left in its group;
- ``processes_naming()`` / ``kill_processes_naming()`` find and kill processes by the unique
  temporary directory on their command line: dockerd's own containerd and chromium's crash
  handlers start sessions of their own, so killing a process group does not reach them;
- ``mounts_below()`` / ``unmount_below()`` for state directories an engine mounted into;
- ``HostFootprint`` removes again what an engine creates outside its state directory whatever
  it is told (``/etc/docker/key.json``...), when it did not exist before.

The binaries are those Debian's packages install: ``tool()`` looks in /usr/sbin and /usr/bin
first (a newer ``docker`` CLI in /usr/local/bin is not what the ``docker.io`` package ships).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.polling import wait_until
from tests.harness.procs import _die_with_parent, pid_alive

ENGINE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TIMEOUT = 180.0

# Which Debian package installs each tool (scripts/test.sh installs them all).
PACKAGES = {
    "dockerd": "docker.io",
    "docker": "docker.io",
    "containerd": "containerd",
    "ctr": "containerd",
    "podman": "podman",
    "chromium": "chromium",
    "fc-list": "fontconfig",
}


def tool(name: str) -> str | None:
    """The path of ``name`` as a Debian package installs it, else on PATH, else None."""
    return shutil.which(name, path=ENGINE_PATH) or shutil.which(name)


def missing_tools(*names: str) -> str | None:
    """None when every tool is installed, else a message naming the packages to install."""
    missing = [name for name in names if tool(name) is None]
    if not missing:
        return None
    packages = sorted({PACKAGES.get(name, name) for name in missing})
    return (
        f"not installed: {', '.join(missing)}; run scripts/test.sh as root "
        f"(apt-get install {' '.join(packages)})"
    )


def engine_env(base: Path, **extra: str | Path) -> dict[str, str]:
    """A clean environment: Debian's PATH, HOME and TMPDIR below ``base``, nothing inherited.

    Nothing of the caller's environment leaks in: no ``*_proxy`` variables, no DOCKER_HOST,
    no XDG directories with stored logins or registries.conf.
    """
    home, tmp = base / "home", base / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"PATH": ENGINE_PATH, "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}
    env.update({key: str(value) for key, value in extra.items()})
    return env


def short_tempdir(prefix: str) -> Path:
    """A fresh directory in /tmp with a short path: unix socket paths are limited to 108 bytes,
    and dockerd nests its containerd's socket four levels deep."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# -- running commands ----------------------------------------------------------------------------


@dataclass
class Result:
    """A finished command."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    def describe(self, limit: int = 6000) -> str:
        return (
            f"$ {shlex.join(self.argv)}\nexit status {self.returncode} after "
            f"{self.duration:.1f}s\n--- stdout ---\n{self.stdout[-limit:]}\n"
            f"--- stderr ---\n{self.stderr[-limit:]}"
        )


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    cwd: Path | None = None,
) -> Result:
    """Run ``argv`` to completion in a new process group; raise AssertionError on failure.

    The group is killed afterwards in any case, so nothing the command started in it survives.
    """
    args = [str(a) for a in argv]
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env),
            cwd=cwd,
            preexec_fn=_die_with_parent,
            close_fds=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            proc.wait()
        out.seek(0)
        err.seek(0)
        result = Result(
            args,
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            time.monotonic() - started,
        )
    if timed_out:
        raise AssertionError(f"timed out after {timeout}s:\n{result.describe()}")
    if check and result.returncode != 0:
        raise AssertionError(result.describe())
    return result


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# -- leftovers -------------------------------------------------------------------------------------


def processes_naming(text: str | Path) -> dict[int, str]:
    """Live processes (pid -> command line) with ``text`` in one of their arguments."""
    needle = str(text).encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if any(needle in arg for arg in argv) and pid_alive(int(entry.name)):
            found[int(entry.name)] = b" ".join(argv).decode("utf-8", "replace")
    return found


def kill_processes_naming(text: str | Path, timeout: float = 10.0) -> dict[int, str]:
    """SIGKILL every live process naming ``text`` and wait until all are gone.

    Returns what was killed; raises RuntimeError if anything survives ``timeout``.
    """
    killed = processes_naming(text)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not wait_until(lambda: not any(pid_alive(pid) for pid in killed), timeout):
        alive = {pid: cmd for pid, cmd in killed.items() if pid_alive(pid)}
        raise RuntimeError(f"processes survived SIGKILL: {alive}")
    return killed


def _unescape_mount_path(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    root = str(path).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape_mount_path(line.split()[4])
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_below(path: Path) -> list[str]:
    """Lazily unmount everything at or below ``path``; returns what was mounted."""
    points = mounts_below(path)
    for point in points:
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    still = mounts_below(path)
    if still:
        raise RuntimeError(f"could not unmount {still}")
    return points


class HostFootprint:
    """Paths an engine creates outside its state directory whatever its options say.

    ``restore()`` removes those that did not exist when this was made: files, and directories
    once they are empty (never anything that existed before, nor directories with other content).
    """

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.existed = {p: p.exists() or p.is_symlink() for p in self.paths}

    def restore(self) -> list[str]:
        removed = []
        for path in sorted(self.paths, key=lambda p: len(p.parts), reverse=True):
            if self.existed[path]:
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError:  # a directory something else put content into: leave it
                continue
            removed.append(str(path))
        return removed
