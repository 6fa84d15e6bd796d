"""What a cache hit's metadata read costs inline, and through the disk pool.

Run from the project root with the project's venv:

    .venv/bin/python bench/meta_read.py [--reads 20000] [--size 4096]

A manifest document of ``--size`` bytes (random bytes, base64 in JSON, as
dockerproxy.cache.manifests keeps them) is written to a FilesystemStore in a temp
directory (so it is in the page cache, as on a hit), then read back ``--reads`` times:

- inline, as the reactor thread does now: ``store.read_meta(key)``;
- through the disk pool, as the writes go: ``ThreadedPool(reactor, pool).run(
  store.read_meta, key)`` on a running epoll reactor with a started 4-thread
  ThreadPool, one read at a time, timed from the call to its callback.

It prints the p50 / p99 / max of each in microseconds. Nothing else runs in the
process; on a busy proxy the hand-back to the reactor also waits for its other work.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

from twisted.internet import defer, task
from twisted.python.threadpool import ThreadPool

from dockerproxy.cache.diskio import ThreadedPool
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.services import DISK_THREADS

KEY = "manifests/sha256/" + "ab" * 32


def stats(seconds: Sequence[float]) -> str:
    us = sorted(s * 1e6 for s in seconds)
    return (
        f"p50 {statistics.median(us):.1f} us, p99 {us[int(0.99 * len(us))]:.1f} us, "
        f"max {us[-1]:.1f} us"
    )


def inline(store: FilesystemStore, reads: int) -> list[float]:
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        store.read_meta(KEY)
        times.append(time.perf_counter() - start)
    return times


async def pooled(reactor: object, store: FilesystemStore, reads: int) -> list[float]:
    threadpool = ThreadPool(minthreads=0, maxthreads=DISK_THREADS, name="bench-disk")
    threadpool.start()
    pool = ThreadedPool(reactor, threadpool)  # type: ignore[arg-type]
    times = []
    try:
        for _ in range(reads):
            start = time.perf_counter()
            await pool.run(store.read_meta, KEY)
            times.append(time.perf_counter() - start)
    finally:
        threadpool.stop()
    return times


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reads", type=int, default=20000, help="reads of each kind (20000)")
    p.add_argument("--size", type=int, default=4096, help="manifest bytes (4096)")
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="dockerproxy-metaread-")
    try:
        store = FilesystemStore(root)
        store.create()
        store.write_meta(
            KEY,
            {
                "media_type": "application/vnd.oci.image.index.v1+json",
                "data": base64.b64encode(os.urandom(args.size)).decode(),
            },
        )
        inline(store, 1000)  # warm up
        first = inline(store, args.reads)

        async def run(reactor: object) -> None:
            await pooled(reactor, store, 1000)  # warm up: threads started
            through_pool = await pooled(reactor, store, args.reads)
            print(f"metadata read of a {args.size}-byte manifest document, {args.reads} reads:")
            print(f"  inline (reactor thread): {stats(first)}")
            print(f"  through the disk pool:   {stats(through_pool)}")

        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
