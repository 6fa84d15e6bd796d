"""The fleet's parts, built from plain values (the config layer stays above)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from dockerproxy.cache.diskio import Pool, ThreadedPool
from dockerproxy.fleet.client import FleetClient, FleetPoolService, make_redis
from dockerproxy.fleet.locks import FillLocks
from dockerproxy.fleet.manifests import (
    ManifestBytes,
    RedisManifestBytes,
    S3ManifestBytes,
    SharedManifests,
)
from dockerproxy.fleet.records import FleetRecords
from dockerproxy.meters import NO_METERS, Meters

if TYPE_CHECKING:
    from dockerproxy.cache.s3 import S3BlobStore


@dataclass
class Fleet:
    """What an instance shares with the fleet: C{locks} only with an S3 tier, the one
    place blobs are shared through."""

    client: FleetClient
    service: FleetPoolService
    manifests: SharedManifests
    locks: FillLocks | None
    public_ttl: float = 7 * 86400.0  # how long a record lives in Redis

    def records(self, local: Any) -> FleetRecords:
        """The access records, shared, over the instance's C{local} ones."""
        return FleetRecords(self.client, local, self.public_ttl)


def make_fleet(
    url: str,
    prefix: str,
    timeout: float,
    reactor: Any,
    tag_ttl: float,
    s3: S3BlobStore | None = None,
    meters: Meters = NO_METERS,
    redis: Any = None,
    pool: Pool | None = None,
) -> Fleet:
    """Nothing connects until the first call (after the service starts); C{redis} and
    C{pool} (where calls run, by default the service's threads) in tests."""
    redis = redis if redis is not None else make_redis(url, timeout)
    service = FleetPoolService(redis)
    clock: IReactorTime = reactor
    pool = pool or ThreadedPool(reactor, service.threadpool)
    client = FleetClient(redis, pool, clock, prefix, meters)
    documents: ManifestBytes = (
        RedisManifestBytes(client) if s3 is None else S3ManifestBytes(s3, client)
    )
    return Fleet(
        client,
        service,
        SharedManifests(client, documents, tag_ttl),
        None if s3 is None else FillLocks(client, clock),
    )
