"""A partial's writeback starts while the fill writes it (cache/writeback.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockerproxy.cache import writeback
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.cache.writeback import STEP, Writeback

MIB = 1024 * 1024


@pytest.fixture
def store() -> Iterator[FilesystemStore]:
    root = Path(tempfile.mkdtemp(prefix="dockerproxy-test-"))
    store = FilesystemStore(root)
    store.create()
    yield store
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int, int]]:
    """The sync_file_range calls made, each answered as the kernel would on a file."""
    made: list[tuple[int, int, int, int]] = []

    def record(fd: int, offset: int, length: int, flags: int) -> int:
        made.append((fd, offset, length, flags))
        return 0

    monkeypatch.setattr(writeback, "_sync_file_range", record)
    return made


def test_a_fill_starts_writing_back_a_step_at_a_time(
    store: FilesystemStore, calls: list[tuple[int, int, int, int]]
) -> None:
    partial = store.open_partial()
    for _ in range(20):
        partial.write(b"x" * MIB)
    fds = {fd for fd, *_ in calls}
    ranges = [(offset, length) for _, offset, length, _ in calls]
    assert ranges == [(0, STEP), (STEP, STEP)], "every byte once, in order, in steps"
    assert len(fds) == 1 and {flags for *_, flags in calls} == {2}
    partial.discard()


def test_a_throwaway_cache_starts_no_writeback(calls: list[tuple[int, int, int, int]]) -> None:
    root = Path(tempfile.mkdtemp(prefix="dockerproxy-test-"))
    try:
        store = FilesystemStore(root, fsync=False)
        store.create()
        partial = store.open_partial()
        partial.write(b"x" * (2 * STEP))
        partial.discard()
    finally:
        shutil.rmtree(root)
    assert calls == []


def test_the_kernel_takes_the_call_on_a_real_file(store: FilesystemStore) -> None:
    partial = store.open_partial()
    partial.write(b"x" * (STEP + 1))
    assert partial._writeback is not None and partial._writeback.enabled
    assert partial._writeback.started == STEP + 1
    partial.discard()


def test_a_file_that_cannot_be_written_back_turns_it_off() -> None:
    """A pipe stands for a file system without support: no error, nothing more tried."""
    read_end, write_end = os.pipe()
    try:
        wb = Writeback()
        wb.wrote(write_end, STEP)
        assert not wb.enabled
    finally:
        os.close(read_end)
        os.close(write_end)
