"""Building the proxy's parts from its settings: the upstream exchange, the S3 tier, the
mirror and the Site. Only construction: L{dockerproxy.servicetree.service_for} puts them in the
service tree, which starts and stops them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from dockerproxy.access import AccessCache, RecordStore
from dockerproxy.accessrecords import MetaRecords
from dockerproxy.cache.blobs import BlobCache
from dockerproxy.cache.diskio import DiskWork, Pool
from dockerproxy.cache.documents import Documents
from dockerproxy.cache.flocks import FillLocks
from dockerproxy.cache.store import FilesystemStore
from dockerproxy.cache.tokenmarks import TokenMarks
from dockerproxy.challenges import ChallengeCache
from dockerproxy.clientauth import ClientAuth
from dockerproxy.config import (
    AccessSettings,
    CacheConfig,
    ClientLimits,
    Config,
    UpstreamConfig,
)
from dockerproxy.exchange import Proxy
from dockerproxy.heap import HeapTrimmer
from dockerproxy.meters import NO_METERS, Meters
from dockerproxy.mirror import Mirror
from dockerproxy.resources import RootResource
from dockerproxy.routing import Router
from dockerproxy.search import SearchIndex
from dockerproxy.site import ProxySite
from dockerproxy.upstream import UpstreamClient, UpstreamClients, make_http_client, make_pool
from dockerproxy.upstreamauth import UpstreamTokens
from dockerproxy.users import Pool as UserPool
from dockerproxy.users import UserStore

if TYPE_CHECKING:
    from dockerproxy.cache.s3 import S3BlobStore
    from dockerproxy.fleet.wiring import Fleet


def make_proxy(
    config: Config, reactor: IReactorTime, http: Any = None, meters: Meters = NO_METERS
) -> tuple[Proxy, Any]:
    """Wire routing, upstream clients and the challenge cache; inject C{http} in tests.

    Each upstream gets its own client (its timeouts, CA and TLS checks) over one
    shared connection pool, which the caller closes on shutdown; each reports its
    requests to C{meters} under the registry's name.
    """
    pool = None if http is not None else make_pool(reactor)

    def client_for(upstream: UpstreamConfig) -> UpstreamClient:
        timeouts = upstream.timeouts or config.timeouts
        if http is not None or pool is None:
            return UpstreamClient(http, reactor, timeouts, upstream.name, meters)
        ca_files = [f for f in (config.upstream_ca, upstream.ca_file) if f]
        client = make_http_client(reactor, pool, timeouts, ca_files, upstream.insecure)
        return UpstreamClient(client, reactor, timeouts, upstream.name, meters)

    clients = UpstreamClients(client_for)
    proxy = Proxy(
        Router.from_config(config),
        clients,
        ChallengeCache(clients, reactor),
        reactor,
        public_url=config.public_url,
        # Clients logging in to the proxy: it meets the upstreams as itself.
        upstream_auth=UpstreamTokens(reactor) if config.auth.enabled else None,
    )
    return proxy, pool


def make_client_auth(
    config: Config, proxy: Proxy, reactor: IReactorTime, pool: UserPool
) -> ClientAuth:
    """The proxy's users and its token service (consulted by the resources only when
    C{config.auth.enabled}); bcrypt checks run on C{pool}. Its signing key is loaded
    by a L{dockerproxy.proxytokens.SigningKeyService} as the proxy starts."""
    return ClientAuth(config.auth, proxy, UserStore(config.auth, pool, reactor), reactor)


def make_s3(
    config: Config, reactor: IReactorTime, pool: Any, http: Any = None, meters: Meters = NO_METERS
) -> S3BlobStore | None:
    """The blob tier shared with other instances, if configured (it needs the local cache).

    Its own client over the same C{pool}, trusting upstream_ca too; C{http} in tests.
    """
    if config.cache.s3 is None or config.cache.directory is None:
        return None
    # Imported here: botocore loads only for a proxy that uses S3.
    from dockerproxy.cache.s3 import S3BlobStore

    s3_http = (
        http
        if http is not None
        else make_http_client(
            reactor, pool, config.timeouts, [config.upstream_ca] if config.upstream_ca else []
        )
    )
    return S3BlobStore(
        s3_http,
        reactor,
        config.cache.s3,
        timeout=config.timeouts.headers,
        idle_timeout=config.timeouts.idle,
        meters=meters,
    )


def make_fleet(
    config: Config, reactor: Any, s3: S3BlobStore | None, meters: Meters = NO_METERS
) -> Fleet | None:
    """The fleet's Redis side (L{dockerproxy.fleet}), with C{--redis} and a local cache."""
    fleet = config.fleet
    if fleet.redis is None or config.cache.directory is None:
        return None
    from dockerproxy.fleet.wiring import make_fleet as build  # redis loads only in a fleet

    return build(
        fleet.redis,
        fleet.prefix,
        fleet.timeout,
        reactor,
        config.cache.stale_max_age,
        s3,
        meters,
    )


def make_mirror(
    cache: CacheConfig,
    reactor: IReactorTime,
    exchange: Proxy,
    disk_pool: Pool,
    s3: S3BlobStore | None = None,
    fleet: Fleet | None = None,
    shared: bool = False,
) -> Mirror | None:
    """The pull-through cache over C{cache.directory}, not started: a L{CacheService}
    recovers what a crash left behind and loads the records.

    Misses go upstream through C{exchange}; C{s3} adds the blob tier shared with
    other instances. Blocking disk work (commits, metadata writes, touches,
    unlinks) runs on C{disk_pool}: the proxy's thread pool (L{ThreadedPool}).
    C{shared}: other workers use the directory too (L{dockerproxy.cache.sharing}).
    """
    if cache.directory is None:
        return None
    store = FilesystemStore(cache.directory)
    disk = DiskWork(disk_pool)
    documents = Documents(store, disk)
    claims = FillLocks(store.tmp_dir) if shared else None
    blobs = BlobCache(
        store, reactor, cache.max_size, disk=disk, max_blob_size=cache.max_blob_size, locks=claims
    )
    records: RecordStore = MetaRecords(documents, shared=shared)
    if fleet is not None:  # shared by the fleet, kept on this disk too
        records = fleet.records(records)
    marks = TokenMarks(store.root, disk, reactor) if shared else None
    access = AccessCache(reactor, records=records, marks=marks)
    return Mirror(
        blobs,
        documents,
        access,
        exchange,
        cache.tag_ttl,
        cache.stale_max_age,
        s3=s3,
        shared=None if fleet is None else fleet.manifests,
        locks=None if fleet is None else fleet.locks,
    )


def make_search(config: Config, proxy: Proxy) -> SearchIndex | None:
    """C{docker search}'s index (L{dockerproxy.search}), when one is configured."""
    upstream = config.search.upstream
    return None if upstream is None else SearchIndex(proxy, upstream)


def make_site(
    proxy: Proxy,
    reactor: IReactorTime,
    limits: ClientLimits | None = None,
    mirror: Mirror | None = None,
    heap: HeapTrimmer | None = None,
    access: AccessSettings | None = None,
    client_auth: ClientAuth | None = None,
    search: SearchIndex | None = None,
) -> ProxySite:
    root = RootResource(proxy, mirror, client_auth, search)
    site = ProxySite(root, reactor, limits, heap, access)
    if client_auth is not None:
        site.identify = client_auth.identify
    return site
