"""Manifests and tags through the mirror with the cache's disk work held back: the
answer does not wait for the write, and the next request is a hit all the same,
read back before the document reaches the disk."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dockerproxy.config import CacheConfig, Config
from tests.unit.fakes import ManualPool, scratch_dir
from tests.unit.mirror.mirrorsite import DIGEST, INDEX, MANIFEST, STALE, TTL, MirrorTestCase
from tests.unit.proxysite import HUB_HOST, make_parts, reply

BY_DIGEST = f"/v2/library/busybox/manifests/{DIGEST}"


class HeldBackWritesTests(MirrorTestCase):
    def use(self, config: Config, http: Any = None) -> None:
        self.pool = ManualPool()
        self.root = scratch_dir(self)
        cache = CacheConfig(directory=str(self.root), tag_ttl=TTL, stale_max_age=STALE)
        self.proxy, self.mirror, self.site = make_parts(
            replace(config, cache=cache), self.clock, http or self.stub, self.pool
        )

    def meta_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.root / "meta")) for p in (self.root / "meta").rglob("*.json")
        )

    def test_a_manifest_is_answered_before_it_is_written_and_then_hit(self) -> None:
        self.upstream.on(
            HUB_HOST,
            BY_DIGEST,
            reply(200, MANIFEST, content_type=INDEX, docker_content_digest=DIGEST),
        )
        first = self.pull(path=BY_DIGEST)
        self.assertEqual((first.status, first.body), (200, MANIFEST))
        self.assertEqual(self.pool.names(), ["write_meta"])
        self.assertEqual(self.meta_files(), [], "nothing written inline")
        second = self.pull(path=BY_DIGEST)
        self.assertEqual((second.status, second.body), (200, MANIFEST))
        self.assertEqual(self.access[-1]["cache"], "hit")
        self.assertEqual(len(self.upstream_calls()), 1)
        self.pool.complete_all()
        self.assertEqual(self.meta_files(), [f"manifests/sha256/{DIGEST[7:]}.json"])

    def test_a_tag_is_hit_before_its_documents_are_written(self) -> None:
        self.assertEqual(self.pull().body, MANIFEST)
        self.assertEqual(self.pool.names(), ["write_meta", "write_meta"], "manifest and tag")
        self.assertEqual(self.pull().body, MANIFEST)
        self.assertEqual(self.access[-1]["cache"], "hit")
        self.assertEqual(len(self.upstream_calls()), 1)
        self.pool.complete_all()
        self.assertEqual(len(self.meta_files()), 2)
