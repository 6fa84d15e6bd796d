"""C{python -m dockerproxy.cache stats|verify|prune --cache-dir DIR}: look after a cache.

It works on the directory alone, so it runs beside a live proxy: C{verify}
and C{prune} only ever delete whole committed blobs, which the proxy then
treats as misses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from dockerproxy.cache.store import STATS_KEY, FilesystemStore
from dockerproxy.cachedir import default_cache_dir
from dockerproxy.sizes import parse_size

CHUNK = 1024 * 1024


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


def stats(store: FilesystemStore, out: TextIO) -> int:
    """Blobs and bytes on disk, manifests and tags, and the proxy's last saved counters."""
    blobs = store.scan()
    meta = store.meta_dir
    manifests = sum(1 for _ in (meta / "manifests").rglob("*.json"))
    tags = sum(1 for _ in (meta / "tags").glob("*.json"))
    partials = sum(1 for _ in store.tmp_dir.iterdir())
    print(f"cache directory: {store.root}", file=out)
    print(f"blobs:           {len(blobs)} ({human(sum(b.size for b in blobs))})", file=out)
    print(f"manifests:       {manifests}", file=out)
    print(f"tags:            {tags}", file=out)
    print(f"partial fills:   {partials}", file=out)
    counters = store.read_meta(STATS_KEY)
    if isinstance(counters, dict):
        print("last saved by the proxy:", file=out)
        for name in (
            "hits",
            "misses",
            "fills",
            "failed_fills",
            "coalesced",
            "evictions",
            "bytes_served",
        ):
            if name in counters:
                print(f"  {name + ':':<16} {counters[name]}", file=out)
    return 0


def verify(store: FilesystemStore, out: TextIO) -> int:
    """Re-hash every blob; a damaged one is removed (the proxy will fetch it again)."""
    bad = 0
    blobs = store.scan()
    for blob in blobs:
        digest = blob.digest.hasher()
        with open(store.blob_path(blob.digest), "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != blob.digest.hex:
            bad += 1
            store.remove(blob.digest)
            print(f"removed {blob.digest}: its content does not match its digest", file=out)
    print(f"verified {len(blobs)} blobs, {bad} removed", file=out)
    return 1 if bad else 0


def prune(store: FilesystemStore, max_size: int, out: TextIO) -> int:
    """Remove least recently used blobs until the cache fits in C{max_size}."""
    blobs = store.scan()
    used = sum(b.size for b in blobs)
    removed = 0
    for blob in blobs:
        if used <= max_size:
            break
        store.remove(blob.digest)
        used -= blob.size
        removed += 1
    print(f"removed {removed} blobs; {human(used)} left", file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dockerproxy.cache", description="Inspect and trim a dockerproxy cache."
    )
    parser.add_argument("command", choices=("stats", "verify", "prune"))
    parser.add_argument("--cache-dir", default=default_cache_dir())
    parser.add_argument("--max-size", help="prune: the size to trim to, e.g. 10GiB")
    args = parser.parse_args(argv)
    root = Path(args.cache_dir)
    if not (root / "blobs").is_dir():
        print(f"dockerproxy.cache: {root} is not a dockerproxy cache", file=sys.stderr)
        return 2
    store = FilesystemStore(root, fsync=False)
    if args.command == "stats":
        return stats(store, out)
    if args.command == "verify":
        return verify(store, out)
    if args.max_size is None:
        print("dockerproxy.cache: prune needs --max-size", file=sys.stderr)
        return 2
    try:
        max_size = parse_size(args.max_size)
    except ValueError as e:
        print(f"dockerproxy.cache: --max-size: {e}", file=sys.stderr)
        return 2
    return prune(store, max_size, out)
