"""The settings, as typed values: what the rest of the proxy is configured with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from dockerproxy.config.admin import AdminSettings
from dockerproxy.config.auth import AuthSettings
from dockerproxy.config.fleet import FleetSettings
from dockerproxy.config.policy import Quotas
from dockerproxy.config.warm import WarmEntry
from dockerproxy.networks import Networks
from dockerproxy.patterns import RepositoryPattern
from dockerproxy.presets import ALIASES, PRESETS

DOCKER_HUB_URL = PRESETS["docker.io"].url


DOCKER_HUB_HOSTS = frozenset(
    {"docker.io", *(alias for alias, name in ALIASES.items() if name == "docker.io")}
)


DEFAULT_LISTEN = ("tcp:5000",)


LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a TCP/TLS connection, for response headers, and between body bytes."""

    connect: float = 10.0
    headers: float = 60.0
    idle: float = 60.0


@dataclass(frozen=True)
class ClientLimits:
    """What one client may hold: seconds to send a whole request (from its first byte, or from
    the accept for a connection's first request), seconds a keep-alive connection may sit idle,
    and how many client connections may be open at once (more wait in the listen backlog)."""

    client_header_timeout: float = 30.0
    client_idle_timeout: float = 60.0
    max_connections: int = 10_000


@dataclass(frozen=True)
class Credentials:
    """The proxy's own account at an upstream: used only for clients that send none."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream registry and how to talk to it."""

    name: str
    url: str
    library_prefix: bool
    ca_file: str | None = None
    insecure: bool = False
    timeouts: Timeouts | None = None
    credentials: Credentials | None = field(default=None, repr=False)

    @property
    def is_docker_hub(self) -> bool:
        return urlsplit(self.url).hostname in DOCKER_HUB_HOSTS


DEFAULT_S3_REGION = "us-east-1"


# Blobs up to one part go up in a single PUT, larger ones in parts of this size.
DEFAULT_PART_SIZE = 64 * 1024 * 1024


# S3's smallest part (all but the last).
MIN_PART_SIZE = 5 * 1024 * 1024


@dataclass(frozen=True)
class S3Config:
    """Where the blob tier shared with other instances lives (see L{dockerproxy.cache.s3});
    C{prefix} is empty or ends with C{/}."""

    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = DEFAULT_S3_REGION
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str | None = field(default=None, repr=False)
    # Answer hits with a 307 to a presigned URL instead of relaying the bytes.
    redirect: bool = False
    part_size: int = DEFAULT_PART_SIZE


@dataclass(frozen=True)
class CacheConfig:
    """The pull-through cache; C{directory} None means caching is off."""

    directory: str | None
    max_size: int | None = 20 * 1024**3
    max_blob_size: int = 32 * 1024**3  # the largest blob a fill may write
    tag_ttl: float = 300.0
    stale_max_age: float = 7 * 86400.0
    s3: S3Config | None = None  # the blob tier shared with other instances


@dataclass(frozen=True)
class AccessSettings:
    """Who may pull what: client networks served (empty: all), the proxies whose
    C{X-Forwarded-For} / C{Forwarded} name the client, and repository patterns
    allowed (empty: all) and denied (deny wins)."""

    allow_ip: Networks = ()
    trusted_proxies: Networks = ()
    allow: tuple[RepositoryPattern, ...] = ()
    deny: tuple[RepositoryPattern, ...] = ()


@dataclass(frozen=True)
class SearchSettings:
    """Where C{docker search} is answered from (config/search.py); None: it is not."""

    upstream: UpstreamConfig | None = None


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    default: UpstreamConfig | None = None
    routes: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    registries: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    upstream_ca: str | None = None
    timeouts: Timeouts = Timeouts()
    log_format: str = "text"
    cache: CacheConfig = CacheConfig(directory=None)
    limits: ClientLimits = ClientLimits()
    # scheme://host[:port] clients are told to use (challenge realms, the home page);
    # None: the scheme and Host of each request.
    public_url: str | None = None
    # Seconds a stopping proxy lets responses under way finish (dockerproxy.drain).
    drain_timeout: float = 30.0
    access: AccessSettings = AccessSettings()
    auth: AuthSettings = field(default_factory=AuthSettings)  # clients logging in (config/auth.py)
    state_dir: str = ""  # where the token signing key lives (--state-dir)
    quotas: Quotas = field(default_factory=Quotas)  # what each client may use (config.policy)
    admin: AdminSettings = field(default_factory=AdminSettings)  # see config/admin.py
    search: SearchSettings = field(default_factory=SearchSettings)  # see config/search.py
    warm: tuple[WarmEntry, ...] = ()  # [[warm]]: images refreshed on a schedule (config/warm.py)
    http2: bool = False  # h2 offered by ALPN on ssl: listeners (config/protocols.py)
    fleet: FleetSettings = field(default_factory=FleetSettings)  # Redis (config/fleet.py)
    workers: int = 1  # processes serving the listeners (config/workers.py, dockerproxy.workers)
