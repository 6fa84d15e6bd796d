"""A worker's mirror (one of several on a cache directory) and a blob another worker
claimed: it waits for that worker's fill and follows it, and asks the upstream nothing
but its access check (L{dockerproxy.mirror.blobs.UpstreamBlobs}, L{dockerproxy.cache.sharing})."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from dockerproxy.cache.elsewhere import POLL
from dockerproxy.cache.flocks import VERIFIED, Claim, FillLocks
from dockerproxy.config import CacheConfig, Config
from dockerproxy.digests import parse
from tests.unit.fakes import scratch_dir
from tests.unit.mirror.mirrorsite import BLOB, BLOB_DIGEST, STALE, TTL, BlobTestCase
from tests.unit.proxysite import make_parts, parse_response


class ClaimedElsewhereTests(BlobTestCase):
    def use(self, config: Config, http: Any = None) -> None:
        cache = CacheConfig(directory=str(scratch_dir(self)), tag_ttl=TTL, stale_max_age=STALE)
        self.proxy, self.mirror, self.site = make_parts(
            replace(config, cache=cache), self.clock, http or self.stub, shared=True
        )

    def test_a_blob_another_worker_claimed_is_followed_not_fetched(self) -> None:
        self.serve_blob()
        assert self.mirror is not None and self.mirror.blobs.sharing is not None
        digest = parse(BLOB_DIGEST)
        other = FillLocks(self.mirror.blobs.sharing.locks.tmp_dir)  # another worker's view
        claim = other.claim(digest)
        assert isinstance(claim, Claim)
        self.addCleanup(claim.release)
        client = self.get()
        self.pump()
        self.assertEqual(client.value(), b"", "it waits for the other worker's answer")
        # The other worker's upstream answered: its fill starts and is announced.
        claim.announce(len(BLOB))
        claim.partial_path.write_bytes(BLOB)
        self.clock.advance(POLL)
        self.pump()
        self.assertTrue(client.value().endswith(BLOB[:-1]), "followed, the last byte held")
        # The other worker commits (a rename: the file open here is the blob) and says so.
        blob = self.mirror.blobs.store.blob_path(digest)
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(claim.partial_path, blob)
        claim.release(VERIFIED)
        self.clock.advance(POLL)
        self.pump()
        response = parse_response(client.value(), "GET")
        self.assertEqual((response.status, response.body), (200, BLOB))
        self.assertEqual([s.method for s in self.blob_requests()], ["HEAD"], "its access check")
        self.assertIn(digest, self.mirror.blobs)
