"""The engines harness cleans up what real engines leave behind (tests/harness/engines.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.engines import (
    HostFootprint,
    engine_env,
    kill_processes_naming,
    mounts_below,
    processes_naming,
    run,
    unmount_below,
)
from tests.harness.polling import wait_until
from tests.harness.procs import pid_alive

pytestmark = pytest.mark.daemons


def test_run_kills_what_the_command_left_in_its_group(tmp: Path) -> None:
    result = run(["sh", "-c", "sleep 60 & echo $!"], env=engine_env(tmp), timeout=10)
    pid = int(result.stdout.strip())
    assert wait_until(lambda: not pid_alive(pid), 5.0)


def test_run_reports_failures_and_timeouts(tmp: Path) -> None:
    with pytest.raises(AssertionError, match="exit status 3"):
        run(["sh", "-c", "echo oops >&2; exit 3"], env=engine_env(tmp))
    started = time.monotonic()
    with pytest.raises(AssertionError, match="timed out"):
        run(["sleep", "60"], env=engine_env(tmp), timeout=0.5)
    assert time.monotonic() - started < 10


def test_processes_in_their_own_session_are_found_by_their_directory(tmp: Path) -> None:
    """What dockerd's containerd and chromium's crash handlers do: escape the process group."""
    marker = tmp / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(marker)], start_new_session=True
    )
    try:
        wait_until(lambda: proc.pid in processes_naming(marker), 5)
        assert proc.pid in processes_naming(marker)
        assert proc.pid in kill_processes_naming(marker)
        proc.wait(timeout=5)
        assert processes_naming(marker) == {}
    finally:
        proc.kill()
        proc.wait()


def test_mounts_below_a_state_directory_are_undone(tmp: Path) -> None:
    target = tmp / "state" / "mnt point"
    target.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    try:
        assert mounts_below(tmp / "state") == [str(target)]
        assert unmount_below(tmp / "state") == [str(target)]
        assert mounts_below(tmp / "state") == []
    finally:
        subprocess.run(["umount", "--lazy", str(target)], check=False, capture_output=True)


def test_host_footprint_removes_only_what_appeared(tmp: Path) -> None:
    old = tmp / "old"
    old.mkdir()
    (old / "keep").write_text("x")
    footprint = HostFootprint(
        [old, old / "keep", old / "new", tmp / "d", tmp / "d" / "f", tmp / "full"]
    )
    (old / "new").write_text("created")
    (tmp / "d").mkdir()
    (tmp / "d" / "f").write_text("created")
    (tmp / "full").mkdir()
    (tmp / "full" / "foreign").write_text("not ours")
    removed = footprint.restore()
    assert sorted(removed) == sorted(str(p) for p in (old / "new", tmp / "d" / "f", tmp / "d"))
    assert (old / "keep").exists() and (tmp / "full" / "foreign").exists()
