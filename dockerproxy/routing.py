"""Map a request (Host, repository name) to an upstream and the name it knows.

Every resource and the token endpoint go through L{Router}, so the same client
name always means the same upstream repository, in API paths and in token scopes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dockerproxy import errors
from dockerproxy.config import Config, UpstreamConfig


@dataclass(frozen=True)
class Target:
    """Where a client-visible repository name lives upstream."""

    upstream: UpstreamConfig
    repository: str


def normalize_host(host: str | None) -> str:
    return (host or "").strip().lower()


class Router:
    """Host-routed upstreams with an optional default for every other Host."""

    def __init__(self, default: UpstreamConfig | None,
                 routes: Mapping[str, UpstreamConfig]) -> None:
        self.default = default
        self.routes = dict(routes)

    @classmethod
    def from_config(cls, config: Config) -> Router:
        return cls(config.default, config.routes)

    def upstream_for(self, host: str | None) -> UpstreamConfig:
        """The upstream for C{host}: an exact route, a route without the port, or the default."""
        host = normalize_host(host)
        upstream = self.routes.get(host)
        if upstream is None and ":" in host and not host.endswith("]"):
            upstream = self.routes.get(host.rsplit(":", 1)[0])
        if upstream is None:
            upstream = self.default
        if upstream is None:
            raise errors.not_found(
                f"no upstream is configured for host {host or '(none)'}",
                {"routes": {h: u.url for h, u in sorted(self.routes.items())}},
            )
        return upstream

    def resolve(self, host: str | None, name: str) -> Target:
        """The upstream and upstream repository for a (validated) client repository name."""
        upstream = self.upstream_for(host)
        return Target(upstream, upstream_repository(upstream, name))

    def upstreams(self) -> list[UpstreamConfig]:
        """Every distinct configured upstream, default first."""
        seen: dict[str, UpstreamConfig] = {}
        for upstream in [self.default, *self.routes.values()]:
            if upstream is not None:
                seen.setdefault(upstream.url, upstream)
        return list(seen.values())


def upstream_repository(upstream: UpstreamConfig, name: str) -> str:
    """Docker Hub's rule: a one-component name is an official image under C{library/}."""
    if upstream.library_prefix and "/" not in name:
        return f"library/{name}"
    return name
