"""The checkout itself: no file carries a merge's conflict markers (git would commit them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def test_no_conflict_markers_in_tracked_files() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    marked = [
        name
        for name in listed.decode().split("\0")
        if name and (ROOT / name).is_file() and MARKER.search((ROOT / name).read_bytes())
    ]
    assert marked == []
