"""The blob cache's filesystem layout, in real temporary directories."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.cache import store as store_module
from dockerproxy.cache.store import FilesystemStore, StoredBlob
from dockerproxy.digests import Digest, of, parse
from tests.unit.fakes import scratch_dir


def sha256(data: bytes) -> Digest:
    return of(data)


def put(store: FilesystemStore, data: bytes, mtime: float | None = None) -> Digest:
    """Commit C{data} the way a fill does; C{mtime} sets its last use."""
    digest = sha256(data)
    partial = store.open_partial()
    partial.write(data)
    store.commit(partial, digest)
    if mtime is not None:
        store.touch(digest, mtime)
    return digest


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


class LayoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = scratch_dir(self)
        self.store = FilesystemStore(self.root, fsync=False)
        self.store.create()

    def test_directories_are_created_by_create_not_by_construction(self) -> None:
        root = self.root / "fresh"
        store = FilesystemStore(root)
        self.assertFalse(root.exists())
        store.create()
        for name in ("blobs", "tmp", "meta"):
            self.assertTrue((root / name).is_dir())

    def test_blob_path(self) -> None:
        digest = parse("sha256:" + "ab" + "c" * 62)
        self.assertEqual(
            self.store.blob_path(digest), self.root / "blobs" / "sha256" / "ab" / ("ab" + "c" * 62)
        )

    def test_blob_path_refuses_a_bad_digest(self) -> None:
        with self.assertRaises(ValueError):
            self.store.blob_path(parse("sha256:../../etc/passwd"))
        with self.assertRaises(ValueError):
            self.store.blob_path(Digest("sha256", "../../etc/passwd"))

    def test_partials_are_unique_files_in_tmp(self) -> None:
        first, second = self.store.open_partial(), self.store.open_partial()
        self.addCleanup(first.discard)
        self.addCleanup(second.discard)
        self.assertNotEqual(first.path, second.path)
        self.assertEqual(first.path.parent, self.root / "tmp")
        self.assertTrue(first.path.exists())

    def test_partial_writes_are_visible_before_close(self) -> None:
        partial = self.store.open_partial()
        self.addCleanup(partial.discard)
        partial.write(b"abc")
        partial.write(b"de")
        self.assertEqual(partial.path.read_bytes(), b"abcde")
        self.assertEqual(partial.size, 5)

    def test_discard_deletes_the_partial(self) -> None:
        partial = self.store.open_partial()
        partial.write(b"abc")
        partial.discard()
        self.assertFalse(partial.path.exists())
        self.assertTrue(partial.closed)


class CommitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = scratch_dir(self)
        self.store = FilesystemStore(self.root, fsync=False)
        self.store.create()

    def test_commit_moves_the_partial_into_place(self) -> None:
        data = b"hello blob"
        partial = self.store.open_partial()
        partial.write(data)
        path = self.store.commit(partial, sha256(data))
        self.assertEqual(path, self.store.blob_path(sha256(data)))
        self.assertEqual(path.read_bytes(), data)
        self.assertFalse(partial.path.exists())
        self.assertTrue(partial.closed)
        self.assertEqual(files_under(self.root / "tmp"), [])

    def test_a_reader_of_the_partial_keeps_reading_after_commit(self) -> None:
        partial = self.store.open_partial()
        partial.write(b"abc")
        fd = os.open(partial.path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.store.commit(partial, sha256(b"abc"))
        self.assertEqual(os.pread(fd, 10, 0), b"abc")

    def test_used_bytes(self) -> None:
        self.store.recover()
        put(self.store, b"a" * 10)
        digest = put(self.store, b"b" * 5)
        self.assertEqual(self.store.used_bytes(), 15)
        self.store.remove(digest)
        self.assertEqual(self.store.used_bytes(), 10)
        self.store.remove(digest)  # already gone: nothing changes
        self.assertEqual(self.store.used_bytes(), 10)

    def test_used_bytes_without_recover_scans(self) -> None:
        put(self.store, b"a" * 7)
        self.assertEqual(FilesystemStore(self.root).used_bytes(), 7)

    def test_remove(self) -> None:
        digest = put(self.store, b"abc")
        self.store.remove(digest)
        self.assertFalse(self.store.blob_path(digest).exists())

    def test_touch_sets_the_mtime(self) -> None:
        digest = put(self.store, b"abc")
        self.store.touch(digest, 1234567.0)
        self.assertEqual(self.store.blob_path(digest).stat().st_mtime, 1234567.0)
        self.store.touch(sha256(b"missing"), 1.0)  # no error for a blob that is gone

    def test_free_bytes_is_what_statvfs_gives_this_process(self) -> None:
        stat = os.statvfs(self.root)
        free = self.store.free_bytes()
        assert free is not None
        # Other processes write to the same disk meanwhile: equal to within 64 MiB.
        # (trial's assertAlmostEqual takes no delta.)
        self.assertLessEqual(abs(free - stat.f_bavail * stat.f_frsize), 64 * 1024**2)

        def failing(path: object) -> os.statvfs_result:
            raise OSError(5, "Input/output error")

        self.patch(store_module.os, "statvfs", failing)
        self.assertIsNone(self.store.free_bytes())

    def test_commit_fsyncs_before_the_rename(self) -> None:
        events: list[str] = []
        real_fsync, real_replace = os.fsync, os.replace
        self.patch(store_module.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
        self.patch(
            store_module.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))
        )
        put(FilesystemStore(self.root), b"abc")
        self.assertEqual(events, ["fsync", "replace"])

    def test_no_fsync_when_turned_off(self) -> None:
        calls: list[int] = []
        self.patch(store_module.os, "fsync", calls.append)
        put(self.store, b"abc")
        self.assertEqual(calls, [])


class RecoverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = scratch_dir(self)
        self.store = FilesystemStore(self.root, fsync=False)
        self.store.create()

    def test_leftover_partials_are_removed(self) -> None:
        partial = self.store.open_partial()
        partial.write(b"half a blob")  # then kill -9: never committed, never closed
        (self.root / "tmp" / "stray-dir").mkdir()
        (self.root / "tmp" / "stray-dir" / "x").write_bytes(b"x")
        FilesystemStore(self.root).recover()
        self.assertEqual(list((self.root / "tmp").iterdir()), [])

    def test_committed_blobs_survive(self) -> None:
        a = put(self.store, b"aaaa", mtime=2000.0)
        b = put(self.store, b"bb", mtime=1000.0)
        found = FilesystemStore(self.root).recover()
        self.assertEqual(found, [StoredBlob(b, 2, 1000.0), StoredBlob(a, 4, 2000.0)])

    def test_a_crashed_fill_never_appears(self) -> None:
        data = b"crashed"
        partial = self.store.open_partial()
        partial.write(data)
        store = FilesystemStore(self.root)
        self.assertEqual(store.recover(), [])
        self.assertFalse(store.blob_path(sha256(data)).exists())
        self.assertEqual(store.used_bytes(), 0)

    def test_malformed_files_are_removed(self) -> None:
        good = put(self.store, b"good")
        blobs = self.root / "blobs"
        malformed = [
            blobs / "sha256" / "ab" / ("cd" + "0" * 62),  # wrong fan-out directory
            blobs / "sha256" / "ab" / ("ab" + "0" * 10),  # wrong length
            blobs / "sha256" / "ab" / ("ab" + "0" * 61 + "g"),  # not hex
            blobs / "sha256" / "ab" / ("ab" + "0" * 62),  # empty, not the empty blob
            blobs / "sha256" / "stray.txt",
            blobs / "stray",
        ]
        for path in malformed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"" if path.name == "ab" + "0" * 62 else b"junk")
        found = FilesystemStore(self.root).recover()
        self.assertEqual([blob.digest for blob in found], [good])
        self.assertEqual(files_under(blobs), [self.store.blob_path(good)])

    def test_unexpected_directories_are_ignored(self) -> None:
        good = put(self.store, b"good")
        blobs = self.root / "blobs"
        foreign = [blobs / "sha256" / "zz" / ("zz" + "0" * 62), blobs / "md5" / "ab" / "ab00"]
        for path in foreign:
            path.parent.mkdir(parents=True)
            path.write_bytes(b"junk")
        store = FilesystemStore(self.root)
        self.assertEqual([blob.digest for blob in store.recover()], [good])
        self.assertEqual(store.used_bytes(), 4)
        self.assertTrue(all(path.exists() for path in foreign))

    def test_the_empty_blob_is_kept(self) -> None:
        empty = put(self.store, b"")
        self.assertEqual([blob.digest for blob in FilesystemStore(self.root).recover()], [empty])


class MetaTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = scratch_dir(self)
        self.store = FilesystemStore(self.root)
        self.store.create()

    def test_round_trip(self) -> None:
        self.store.write_meta("manifests/docker.io/index", {"a": [1, 2], "b": None})
        self.assertEqual(
            self.store.read_meta("manifests/docker.io/index"), {"a": [1, 2], "b": None}
        )
        self.assertTrue((self.root / "meta" / "manifests" / "docker.io" / "index.json").is_file())

    def test_replace(self) -> None:
        self.store.write_meta("k", 1)
        self.store.write_meta("k", 2)
        self.assertEqual(self.store.read_meta("k"), 2)
        self.assertEqual(list((self.root / "tmp").iterdir()), [])

    def test_missing(self) -> None:
        self.assertIsNone(self.store.read_meta("nothing/here"))

    def test_unreadable_document_is_none(self) -> None:
        (self.root / "meta" / "bad.json").write_bytes(b"{not json")
        self.assertIsNone(self.store.read_meta("bad"))

    def test_a_key_and_a_longer_key_do_not_collide(self) -> None:
        self.store.write_meta("a", "short")
        self.store.write_meta("a/b", "long")
        self.assertEqual(
            (self.store.read_meta("a"), self.store.read_meta("a/b")), ("short", "long")
        )

    def test_unsafe_keys_are_refused(self) -> None:
        for key in [
            "../escape",
            "a/../../b",
            "/etc/passwd",
            "",
            "a//b",
            ".hidden",
            "a/",
            "a\\b",
            "a/./b",
            "x" * 300,
        ]:
            with self.assertRaises(ValueError, msg=key):
                self.store.write_meta(key, 1)
            with self.assertRaises(ValueError, msg=key):
                self.store.read_meta(key)
        self.assertEqual(files_under(self.root), [])

    def test_a_failed_write_leaves_the_old_document(self) -> None:
        self.store.write_meta("k", "old")
        with self.assertRaises(TypeError):
            self.store.write_meta("k", object())
        self.assertEqual(self.store.read_meta("k"), "old")
        self.assertEqual(list((self.root / "tmp").iterdir()), [])
