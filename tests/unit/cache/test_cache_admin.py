"""python -m dockerproxy.cache stats|verify|prune."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockerproxy.cache.admin import main
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.digests import Digest, of


def put(store: FilesystemStore, data: bytes, last_used: float) -> Digest:
    digest = of(data)
    partial = store.open_partial()
    partial.write(data)
    store.commit(partial, digest)
    store.touch(digest, last_used)
    return digest


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.fixture
def cache(tmp_path: Path) -> tuple[FilesystemStore, list[str]]:
    store = FilesystemStore(tmp_path, fsync=False)
    store.create()
    digests = [put(store, bytes([n]) * 1000 * (n + 1), last_used=1000.0 + n) for n in range(3)]
    store.write_meta("stats", {"hits": 7, "misses": 3})
    return store, digests


def test_stats(cache: tuple[FilesystemStore, list[str]]) -> None:
    store, _ = cache
    status, text = run("stats", "--cache-dir", str(store.root))
    assert status == 0
    assert "blobs:           3 (5.9 KiB)" in text
    assert "hits:            7" in text


def test_verify_removes_damaged_blobs(cache: tuple[FilesystemStore, list[str]]) -> None:
    store, digests = cache
    status, text = run("verify", "--cache-dir", str(store.root))
    assert (status, text.strip()) == (0, "verified 3 blobs, 0 removed")
    path = store.blob_path(digests[1])
    os.chmod(path, 0o644)
    path.write_bytes(b"rotten")
    status, text = run("verify", "--cache-dir", str(store.root))
    assert status == 1
    assert f"removed {digests[1]}" in text
    assert not path.exists()
    assert store.blob_path(digests[0]).exists()


def test_prune_removes_least_recently_used_first(cache: tuple[FilesystemStore, list[str]]) -> None:
    store, digests = cache
    status, _ = run("prune", "--cache-dir", str(store.root), "--max-size", "4000")
    assert status == 0
    assert [store.blob_path(d).exists() for d in digests] == [False, False, True]


def test_bad_arguments(tmp_path: Path, cache: tuple[FilesystemStore, list[str]]) -> None:
    assert run("stats", "--cache-dir", str(tmp_path / "nothing"))[0] == 2
    store, _ = cache
    assert run("prune", "--cache-dir", str(store.root))[0] == 2
    assert run("prune", "--cache-dir", str(store.root), "--max-size", "lots")[0] == 2


def test_runs_as_a_module(cache: tuple[FilesystemStore, list[str]]) -> None:
    store, _ = cache
    result = subprocess.run(
        [sys.executable, "-m", "dockerproxy.cache", "stats", "--cache-dir", str(store.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "blobs:           3" in result.stdout
