"""Typed settings, read from TOML and command-line options, validated in one place.

Every problem is reported as a L{ConfigError} naming the offending key, so an
operator sees one clear line instead of a traceback. L{build_config} merges the
TOML file with the command line (L{build}); the settings are plain values
(L{settings}); single checks (L{checks}), upstreams (L{upstreams}) and the cache
(L{cache}) each have their own module.
"""

from dockerproxy.config.auth import AuthSettings
from dockerproxy.config.build import build_config
from dockerproxy.config.checks import (
    ConfigError,
    check_bool,
    check_count,
    check_file,
    check_host,
    check_registry_name,
    check_seconds,
    check_size,
    check_url,
    load_toml,
)
from dockerproxy.config.settings import (
    DEFAULT_LISTEN,
    DEFAULT_PART_SIZE,
    DEFAULT_S3_REGION,
    DOCKER_HUB_HOSTS,
    DOCKER_HUB_URL,
    LOG_FORMATS,
    MIN_PART_SIZE,
    AccessSettings,
    CacheConfig,
    ClientLimits,
    Config,
    Credentials,
    S3Config,
    SearchSettings,
    Timeouts,
    UpstreamConfig,
)
from dockerproxy.config.upstreams import credentials_file, make_upstream

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_PART_SIZE",
    "DEFAULT_S3_REGION",
    "DOCKER_HUB_HOSTS",
    "DOCKER_HUB_URL",
    "LOG_FORMATS",
    "MIN_PART_SIZE",
    "AccessSettings",
    "AuthSettings",
    "CacheConfig",
    "ClientLimits",
    "Config",
    "ConfigError",
    "Credentials",
    "S3Config",
    "SearchSettings",
    "Timeouts",
    "UpstreamConfig",
    "build_config",
    "check_bool",
    "check_count",
    "check_file",
    "check_host",
    "check_registry_name",
    "check_seconds",
    "check_size",
    "check_url",
    "credentials_file",
    "load_toml",
    "make_upstream",
]
