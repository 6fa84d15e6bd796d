"""The mirror's Site with the admin side's metrics wired as L{dockerproxy.servicetree.service_for}
wires them: the access log observed, the upstream clients and S3 reporting to them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dockerproxy.accesslog import access_logger
from dockerproxy.admin.metrics import Metrics
from dockerproxy.config import CacheConfig, Config
from dockerproxy.services import CacheService
from dockerproxy.wiring import make_mirror, make_proxy, make_site
from tests.unit.fakes import SyncPool, scratch_dir
from tests.unit.mirror.mirrorsite import STALE, TTL, BlobTestCase


class MeteredTestCase(BlobTestCase):
    """L{BlobTestCase} (tags and a blob from a fake upstream) with C{self.metrics}."""

    def use(self, config: Config, http: Any = None) -> None:
        self.metrics = Metrics(self.clock)
        cache = CacheConfig(directory=str(scratch_dir(self)), tag_ttl=TTL, stale_max_age=STALE)
        config = replace(config, cache=cache)
        self.proxy, _ = make_proxy(config, self.clock, http=http or self.stub, meters=self.metrics)
        self.mirror = make_mirror(config.cache, self.clock, self.proxy, SyncPool())
        assert self.mirror is not None
        CacheService(self.mirror).startService()
        self.site = make_site(self.proxy, self.clock, mirror=self.mirror)
        self.site.access_log = access_logger(self.metrics.observe)

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)
