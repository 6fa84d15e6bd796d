"""C{dockerproxy warm --cache-dir DIR}: warm a cache directory with no proxy running.

The proxy's own service tree runs in this process, with the configuration of
C{--config} (its upstreams, credentials, routes, S3 tier and cache settings) and
the cache directory named, but listening only on a loopback port the kernel
picks, with no admin listener and no C{[[warm]]} schedule. The images are pulled
through that listener as through a running proxy: one code path for every pull
(routing, access records, digests verified before a blob is committed). Then the
tree stops as on SIGTERM, so the last commits and records reach the disk.

A proxy may be running on the same directory: the tree shares it as a worker
does (L{dockerproxy.cache.sharing}): it leaves C{tmp/} and the fills there alone,
claims a blob before it fetches one (so a proxy with C{--workers} and this command
make one upstream GET for it), keeps the directory's size bound, and merges its
access records into the shared ones.

When clients must log in, the pulls present the token the proxy signs for its
own identity (as the daemon's C{[[warm]]} refresh does), so no user is needed;
the signing key is the state directory's, as the daemon's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from dockerproxy.config import Config, ConfigError, build_config, load_toml
from dockerproxy.servicetree import service_for
from dockerproxy.warming import Authorize, TokenLogin
from dockerproxy.warmservice import LoopbackHTTP, listener_url, token_authorize

# The one listener of the warming proxy: loopback, a port the kernel picks.
LOOPBACK = "tcp:0:interface=127.0.0.1"


class DirectError(Exception):
    """A configuration that cannot warm a cache directory (one line for the user)."""


def direct_config(path: str | None, cache_dir: str) -> Config:
    """The proxy's configuration (C{path}, else the defaults) for warming C{cache_dir}."""
    try:
        config = build_config(load_toml(path) if path else {}, {"cache_dir": cache_dir})
    except ConfigError as e:
        raise DirectError(f"--config: {e}") from None
    if config.cache.directory is None:
        raise DirectError("--cache-dir: the configuration turns the cache off")
    return dataclasses.replace(
        config,
        listen=(LOOPBACK,),
        admin=dataclasses.replace(config.admin, listen=()),
        warm=(),
    )


async def through_own_proxy(
    reactor: Any,
    config: Config,
    warm: Callable[[Any, str, Authorize], Deferred[Any]],
) -> Any:
    """Start the proxy of C{config}, C{warm(http, url, authorize)} through it, stop it.

    The tree stops however the warming ends (its drain lets fills under way end).
    """
    top = service_for(config, reactor, shared_cache=True)
    top.privilegedStartService()
    top.startService()
    http = LoopbackHTTP(reactor)
    try:
        url = _url(top)
        client_auth = top.client_auth
        authorize: Authorize = (
            token_authorize(client_auth.warm_token)
            if client_auth is not None and client_auth.enabled
            else TokenLogin(http)
        )
        return await warm(http, url, authorize)
    finally:
        await http.close()
        await top.stopService()


def _url(top: Any) -> str:
    """The URL of the tree's listener: a C{tcp:} endpoint listens as the tree starts."""
    url = listener_url(top.listeners.ports) if top.listeners is not None else None
    if url is None:
        raise DirectError("the warming proxy cannot listen on loopback")
    return url
