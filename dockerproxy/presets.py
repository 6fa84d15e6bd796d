"""Built-in upstream registries, by the name clients use for them.

Each is only an endpoint and its short-name rule; everything else (credentials,
CAs, timeouts) comes from configuration. Names are also what containerd sends
as C{?ns=} and what a path prefix such as C{mirror.example.com/ghcr.io/...} uses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    url: str
    library_prefix: bool = False


PRESETS: dict[str, Preset] = {
    # Docker Hub's API host; one-component names are official images under library/.
    "docker.io": Preset("https://registry-1.docker.io", library_prefix=True),
    "ghcr.io": Preset("https://ghcr.io"),
    "quay.io": Preset("https://quay.io"),
    "gcr.io": Preset("https://gcr.io"),
    "registry.k8s.io": Preset("https://registry.k8s.io"),
    "k8s.gcr.io": Preset("https://k8s.gcr.io"),
    "mcr.microsoft.com": Preset("https://mcr.microsoft.com"),
    "public.ecr.aws": Preset("https://public.ecr.aws"),
    "nvcr.io": Preset("https://nvcr.io"),
    "docker.elastic.co": Preset("https://docker.elastic.co"),
}

# Other names clients use for Docker Hub (containerd sends ns=docker.io, but a
# hosts.toml may name the API host).
ALIASES: dict[str, str] = {
    "registry-1.docker.io": "docker.io",
    "index.docker.io": "docker.io",
    "registry.hub.docker.com": "docker.io",
}
