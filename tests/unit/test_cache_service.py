"""The cache's service stops only once its disk work is done: commits under way land,
then the access records and counters are written, all before the thread pool stops."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from dockerproxy.config import build_config
from dockerproxy.digests import of
from dockerproxy.mirror import Mirror
from dockerproxy.services import CacheService
from dockerproxy.wiring import make_mirror, make_proxy
from tests.unit.fakes import FakeResponse, ManualPool, scratch_dir

BODY = bytes(range(256)) * 4
REPO = ("docker.io", "library/alpine")


class StopTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = ManualPool()
        self.root = scratch_dir(self)
        config = build_config(
            {"cache": {"dir": str(self.root)}, "presets": False, "upstream": "http://127.0.0.1:9"},
            {},
        )
        proxy, _ = make_proxy(config, self.clock, http=object())
        mirror = make_mirror(config.cache, self.clock, proxy, self.pool)
        assert mirror is not None
        self.mirror: Mirror = mirror
        self.service = CacheService(mirror)
        self.service.startService()

    def stop(self) -> list[Any]:
        stopped: list[Any] = []
        self.service.stopService().addBoth(stopped.append)
        return stopped

    def stats(self) -> Any:
        path = self.root / "meta" / "stats.json"
        return json.loads(path.read_bytes()) if path.exists() else None

    def test_the_stop_waits_for_a_commit_then_writes_the_counters_that_include_it(self) -> None:
        response = FakeResponse(len(BODY), StringTransport())
        fill = self.mirror.blobs.start_fill(of(BODY), response)
        assert response.protocol is not None
        response.protocol.dataReceived(BODY)
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.pool.names(), ["drain"])  # the writes and the hashing
        self.pool.complete()  # written and hashed: verified
        stopped = self.stop()
        self.assertEqual((stopped, self.pool.names()), ([], ["commit"]))
        self.assertIsNone(self.stats())
        self.pool.complete()  # the commit lands; its touch follows
        self.assertTrue(fill.committed)
        self.assertEqual((stopped, self.pool.names()), ([], ["touch"]))
        self.pool.complete()
        self.assertEqual((stopped, self.pool.names()), ([], ["write_meta"]), "the counters")
        self.pool.complete()
        self.assertEqual(stopped, [None])
        self.assertEqual(self.stats()["blobs"], 1)

    def test_the_stop_waits_for_the_access_records(self) -> None:
        self.mirror.access.note_served(None, REPO, str(of(BODY)))  # saved after a delay
        stopped = self.stop()
        self.assertEqual(stopped, [])
        self.assertEqual(self.pool.names(), ["write_meta", "write_meta"])
        self.pool.complete_all()
        self.assertEqual(stopped, [None])
        records = [json.loads(p.read_bytes()) for p in (self.root / "meta" / "access").iterdir()]
        self.assertEqual([r["repository"] for r in records], ["docker.io/library/alpine"])
        self.assertEqual(self.clock.getDelayedCalls(), [], "the save timer is cancelled")

    def test_with_nothing_to_write_but_the_counters_the_stop_waits_for_them(self) -> None:
        stopped = self.stop()
        self.assertEqual((stopped, self.pool.names()), ([], ["write_meta"]))
        self.pool.complete()
        self.assertEqual(stopped, [None])
        self.assertEqual(self.stats()["blobs"], 0)
