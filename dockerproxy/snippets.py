"""Copy-paste commands and configuration files for each client, with this mirror filled in.

The home page shows these texts (see :mod:`dockerproxy.homepage`); they are plain text, the
same in every language, and this module knows nothing about HTML: the page's template escapes
them as it renders them. Every function is pure, so each client's text is tested on its own.

A Host header that does not look like a host name is never put into a snippet:
:func:`address` replaces it with :data:`PLACEHOLDER_HOST`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CONTAINERD_CERTS_D",
    "CONTAINERD_CRI_V2",
    "CONTAINERD_CRI_V3",
    "DOCKER_HUB",
    "PLACEHOLDER_HOST",
    "Address",
    "MirrorInfo",
    "Target",
    "address",
    "containerd_config",
    "ctr_pull",
    "daemon_json",
    "docker_pull",
    "docker_tag",
    "example_image",
    "hosts_toml",
    "hosts_toml_path",
    "hub_short_name",
    "is_loopback",
    "k3s_registries_yaml",
    "kind_script",
    "prefixed_pulls",
    "prefixed_tags",
    "registries_conf",
    "restart",
    "targets",
]

PLACEHOLDER_HOST = "mirror.example.com"
DOCKER_HUB = "docker.io"
CONTAINERD_CERTS_D = "/etc/containerd/certs.d"
# The CRI plugin's registry section: containerd 1.6/1.7 (config version 2) and 2.x (version 3).
CONTAINERD_CRI_V2 = "io.containerd.grpc.v1.cri"
CONTAINERD_CRI_V3 = "io.containerd.cri.v1.images"

_SAFE_HOST = re.compile(r"[A-Za-z0-9.:\-\[\]]{1,255}")
_YAML_PLAIN_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*")
# Example image per registry; anything else gets _GENERIC_IMAGE.
_EXAMPLE_IMAGES = {DOCKER_HUB: "library/alpine:3.20", "registry.k8s.io": "pause:3.10"}
_GENERIC_IMAGE = "owner/image:tag"


@dataclass(frozen=True)
class MirrorInfo:
    """What the home page describes. The caller passes the default upstream that applies to
    the Host the page is served for (for a routed Host, that route's upstream)."""

    host: str  # the Host the client used, e.g. "mirror.example.com" or "127.0.0.1:5000"
    scheme: str  # "http" or "https"
    default_upstream: str | None  # e.g. "https://registry-1.docker.io"; None: no default
    default_registry: str | None  # registry name of the default upstream, e.g. "docker.io"
    routes: Mapping[str, str] = field(default_factory=dict)  # Host -> upstream URL
    # registry name -> upstream URL; a path prefix (HOST/ghcr.io/owner/img) and containerd ?ns=
    registries: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Address:
    """Where clients reach the mirror, safe to show: a host name (or the placeholder) and a
    scheme that is ``http`` or ``https``."""

    host: str
    scheme: str
    is_placeholder: bool = False

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"


def address(host: str | None, scheme: str | None) -> Address:
    """The mirror's address from a request's Host and scheme; a Host that does not look like
    a host name (markup, spaces, empty, too long) becomes :data:`PLACEHOLDER_HOST`, and any
    scheme but ``http`` becomes ``https``."""
    host = (host or "").strip()
    safe_scheme = "http" if (scheme or "").lower() == "http" else "https"
    if not _SAFE_HOST.fullmatch(host):
        return Address(PLACEHOLDER_HOST, safe_scheme, is_placeholder=True)
    return Address(host, safe_scheme)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (containers cannot reach it there)."""
    name = host.lower()
    return name.startswith(("localhost", "127.", "[::1]")) or name == "::1"


@dataclass(frozen=True)
class Target:
    """A registry this host can mirror."""

    registry: str  # e.g. "docker.io"
    upstream: str  # upstream URL
    path: str  # where it is served on this host: "" (the default) or "/ghcr.io"

    @property
    def image(self) -> str:
        return example_image(self.registry)


def targets(info: MirrorInfo) -> list[Target]:
    """The registries a client can mirror through this host: the default first (at the root),
    then every other configured registry under its path prefix."""
    found = []
    if info.default_upstream and info.default_registry:
        found.append(Target(info.default_registry, info.default_upstream, ""))
    for name, upstream in info.registries.items():
        if name != info.default_registry:
            found.append(Target(name, upstream, "/" + name))
    return found


def example_image(registry: str | None) -> str:
    return _EXAMPLE_IMAGES.get(registry or "", _GENERIC_IMAGE)


def hub_short_name(image: str) -> str:
    """Docker Hub's official images go without ``library/``."""
    return image.removeprefix("library/")


def _lines(lines: Iterable[str]) -> str:
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------- docker pull


def docker_pull(host: str, image: str) -> str:
    return _lines([f"docker pull {host}/{image}"])


def docker_tag(host: str, image: str, name: str) -> str:
    """Give a pulled image its usual ``name`` back."""
    return _lines([f"docker tag {host}/{image} {name}"])


def prefixed_pulls(host: str, mirrored: Sequence[Target]) -> str:
    """One pull per registry served under a path prefix."""
    return _lines(f"docker pull {host}{t.path}/{t.image}" for t in mirrored if t.path)


def prefixed_tags(host: str, mirrored: Sequence[Target]) -> str:
    return _lines(
        f"docker tag {host}{t.path}/{t.image} {t.registry}/{t.image}" for t in mirrored if t.path
    )


def restart(service: str) -> str:
    return _lines([f"sudo systemctl restart {service}"])


# --------------------------------------------------------------------------- Docker daemon


def daemon_json(mirror: Address) -> str:
    """``/etc/docker/daemon.json``; a plain-HTTP mirror is also an insecure registry."""
    lines = ["{", f'  "registry-mirrors": ["{mirror.url}"]']
    if mirror.scheme == "http":
        lines[-1] += ","
        lines.append(f'  "insecure-registries": ["{mirror.host}"]')
    return _lines([*lines, "}"])


# --------------------------------------------------------------------------- containerd


def hosts_toml_path(registry: str) -> str:
    return f"{CONTAINERD_CERTS_D}/{registry}/hosts.toml"


def hosts_toml(mirror: Address, upstream: str | None) -> str:
    """containerd's ``hosts.toml`` for a registry at ``upstream`` (None: the ``_default``
    namespace, which has no server of its own)."""
    lines = []
    if upstream is not None:
        lines += [f'server = "{upstream}"', ""]
    lines += [f'[host."{mirror.url}"]', '  capabilities = ["pull", "resolve"]']
    return _lines(lines)


def containerd_config(plugin: str = CONTAINERD_CRI_V2) -> str:
    """The CRI plugin section of ``config.toml`` that turns on ``hosts.toml`` files."""
    return _lines([f'[plugins."{plugin}".registry]', f'  config_path = "{CONTAINERD_CERTS_D}"'])


def ctr_pull(target: Target) -> str:
    return _lines(
        [f"sudo ctr images pull --hosts-dir {CONTAINERD_CERTS_D} {target.registry}/{target.image}"]
    )


# --------------------------------------------------------------------------- podman, CRI-O


def registries_conf(mirror: Address, mirrored: Sequence[Target]) -> str:
    """``registries.conf`` entries: each registry mirrored at its path on this host."""
    blocks = []
    for target in mirrored:
        block = [
            "[[registry]]",
            f'prefix = "{target.registry}"',
            f'location = "{target.registry}"',
            "",
            "[[registry.mirror]]",
            f'location = "{mirror.host}{target.path}"',
        ]
        if mirror.scheme == "http":
            block.append("insecure = true")
        blocks.append("\n".join(block))
    return "\n\n".join(blocks) + "\n"


# --------------------------------------------------------------------------- k3s, kind


def _yaml_key(name: str) -> str:
    return name if _YAML_PLAIN_KEY.fullmatch(name) else f'"{name}"'


def k3s_registries_yaml(mirror: Address, mirrored: Sequence[Target]) -> str:
    """``/etc/rancher/k3s/registries.yaml``: every registry mirrored at this one endpoint."""
    lines = ["mirrors:"]
    for target in mirrored:
        lines += [f"  {_yaml_key(target.registry)}:", "    endpoint:", f'      - "{mirror.url}"']
    return _lines(lines)


def kind_script(mirror: Address, mirrored: Sequence[Target]) -> str:
    """A shell script writing each registry's ``hosts.toml`` into ``./certs.d``, mounting it
    into the nodes and pointing their containerd at it."""
    lines = []
    for target in mirrored:
        directory = f"certs.d/{target.registry}"
        lines += [
            f"mkdir -p {directory}",
            f"cat > {directory}/hosts.toml <<'EOF'",
            hosts_toml(mirror, target.upstream) + "EOF",
            "",
        ]
    lines += [
        "cat > kind.yaml <<EOF",
        "kind: Cluster",
        "apiVersion: kind.x-k8s.io/v1alpha4",
        "containerdConfigPatches:",
        "  - |-",
        f'    [plugins."{CONTAINERD_CRI_V2}".registry]',
        f'      config_path = "{CONTAINERD_CERTS_D}"',
        "nodes:",
        "  - role: control-plane",
        "    extraMounts:",
        "      - hostPath: $PWD/certs.d",
        f"        containerPath: {CONTAINERD_CERTS_D}",
        "EOF",
        "kind create cluster --config kind.yaml",
    ]
    return _lines(lines)
