"""Map a request (Host, repository name, containerd's C{ns}) to an upstream and a name.

Three modes work at once on one listener:

1. C{ns}: containerd's mirror requests carry C{?ns=<registry>}; it names the upstream.
2. Host: C{docker.example.com} is routed to one upstream, names unchanged.
3. Path prefix: C{mirror.example.com/ghcr.io/owner/image} is C{owner/image} on ghcr.io.

Everything else goes to the default upstream (Docker Hub unless configured
otherwise). A registry that is not configured is a 404 before any outbound
request: the proxy is never an open proxy. Every resource and the token
endpoint use L{Router}, so a name means the same upstream repository in API
paths and in token scopes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from dockerproxy import errors
from dockerproxy.config import Config, UpstreamConfig
from dockerproxy.presets import ALIASES

_REGISTRY_LIKE = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?|localhost(:\d+)?")


@dataclass(frozen=True)
class Target:
    """Where a client-visible repository name lives upstream."""

    upstream: UpstreamConfig
    repository: str


def normalize_host(host: str | None) -> str:
    return (host or "").strip().lower()


class Router:
    """Routes by C{ns}, then Host, then a registry path prefix, then the default."""

    def __init__(
        self,
        default: UpstreamConfig | None,
        routes: Mapping[str, UpstreamConfig],
        registries: Mapping[str, UpstreamConfig] | None = None,
    ) -> None:
        self.default = default
        self.routes = dict(routes)
        self.registries = dict(registries or {})

    @classmethod
    def from_config(cls, config: Config) -> Router:
        return cls(config.default, config.routes, config.registries)

    def registry(self, name: str) -> UpstreamConfig:
        """The configured registry C{name} (containerd's C{ns}), or a 404."""
        upstream = self._registry(normalize_host(name))
        if upstream is None:
            raise self._unconfigured(name)
        return upstream

    def _registry(self, key: str) -> UpstreamConfig | None:
        return self.registries.get(ALIASES.get(key, key))

    def _unconfigured(self, name: str) -> errors.RegistryError:
        return errors.not_found(
            f"registry {name!r} is not configured on this proxy",
            {"registries": sorted(self.registries)},
        )

    def host_route(self, host: str | None) -> UpstreamConfig | None:
        """The route for C{host}: exact, or without its port."""
        host = normalize_host(host)
        upstream = self.routes.get(host)
        if upstream is None and ":" in host and not host.endswith("]"):
            upstream = self.routes.get(host.rsplit(":", 1)[0])
        return upstream

    def upstream_for(self, host: str | None, ns: str | None = None) -> UpstreamConfig:
        """The upstream for a request that names no repository (C{/v2/}, C{/v2/auth})."""
        if ns:
            return self.registry(ns)
        upstream = self.host_route(host) or self.default
        if upstream is None:
            raise self._unknown_host(host)
        return upstream

    def resolve(self, host: str | None, name: str, ns: str | None = None) -> Target:
        """The upstream and upstream repository for a (validated) client repository name."""
        if ns:
            upstream = self.registry(ns)
            return Target(upstream, upstream_repository(upstream, name))
        routed = self.host_route(host)
        if routed is not None:
            return Target(routed, upstream_repository(routed, name))
        prefix, _, rest = name.partition("/")
        if rest:
            prefixed = self._registry(prefix)
            if prefixed is not None:
                return Target(prefixed, upstream_repository(prefixed, rest))
            if _REGISTRY_LIKE.fullmatch(prefix) and self._prefix_is_a_registry():
                raise self._unconfigured(prefix)
        if self.default is None:
            raise self._unknown_host(host)
        return Target(self.default, upstream_repository(self.default, name))

    def _prefix_is_a_registry(self) -> bool:
        """Docker Hub has no dotted namespaces, so there a dotted first component is a registry.

        Another default upstream may well have a namespace such as C{my.team}; one
        with Docker Hub's naming rule (C{library_prefix}) is treated as Docker Hub.
        """
        default = self.default
        return default is None or default.is_docker_hub or default.library_prefix

    def _unknown_host(self, host: str | None) -> errors.RegistryError:
        return errors.not_found(
            f"no upstream is configured for host {normalize_host(host) or '(none)'}",
            {
                "routes": {h: u.url for h, u in sorted(self.routes.items())},
                "registries": sorted(self.registries),
            },
        )


def upstream_repository(upstream: UpstreamConfig, name: str) -> str:
    """Docker Hub's rule: a one-component name is an official image under C{library/}."""
    if upstream.library_prefix and "/" not in name:
        return f"library/{name}"
    return name
