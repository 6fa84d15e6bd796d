"""Image references and platforms as an operator writes them, for warming the cache.

An image reference is what comes after the proxy's host in C{docker pull
HOST/NAME:TAG}: C{alpine:3.20}, C{ghcr.io/acme/app:1} (a path prefix naming a
registry), C{docker.io/library/nginx:latest}, C{NAME@sha256:...}. Warming pulls
exactly that name from the proxy, so the proxy routes it as it would route a
client's pull (short names get C{library/} where the proxy adds it). No tag means
C{latest}, as for C{docker pull}.

A platform is C{os/arch[/variant]}, as in C{--platform linux/arm64/v8}.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dockerproxy import digests, names

# The first component may name a registry with a port (localhost:5000/app).
_FIRST = re.compile(r"(?P<registry>[a-z0-9]([a-z0-9.-]*[a-z0-9])?:\d{1,5})/(?P<rest>.+)")
_PLATFORM_PART = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


class BadReference(ValueError):
    """Not an image reference or platform; the message says why, quoting the input."""


@dataclass(frozen=True)
class ImageRef:
    """A name the proxy serves and a tag or digest in it."""

    name: str
    reference: str  # a tag, or a digest (sha256:...)

    def __str__(self) -> str:
        sep = "@" if self.is_digest else ":"
        return f"{self.name}{sep}{self.reference}"

    @property
    def is_digest(self) -> bool:
        return ":" in self.reference


def parse_image(text: str) -> ImageRef:
    """C{NAME[:TAG][@DIGEST]} (a digest wins over a tag, as for C{docker pull})."""
    value = text.strip()
    name, at, digest = value.partition("@")
    reference = "latest"
    if at:
        if digests.parse_or_none(digest) is None:
            raise BadReference(f"bad digest in {text!r}")
        reference = digest
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        if not names.TAG_RE.fullmatch(tag):
            raise BadReference(f"bad tag in {text!r}")
        if not at:
            reference = tag
    if not _valid_name(name):
        raise BadReference(
            f"not an image name such as alpine:3.20 or ghcr.io/acme/app:1, got {text!r}"
        )
    return ImageRef(name, reference)


def _valid_name(name: str) -> bool:
    match = _FIRST.fullmatch(name)
    rest = match.group("rest") if match else name
    return len(name) <= names.MAX_NAME_LENGTH and names.NAME_RE.fullmatch(rest) is not None


@dataclass(frozen=True)
class Platform:
    """C{os/arch[/variant]}; a variant asked for must match, none asked matches any."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, platform: Mapping[str, Any]) -> bool:
        """Whether an index entry's C{platform} object is this platform."""
        return (
            platform.get("os") == self.os
            and platform.get("architecture") == self.architecture
            and (self.variant is None or platform.get("variant") == self.variant)
        )


# Warmed when no platform is named: what most clients (and CI runners) pull.
DEFAULT_PLATFORMS = (Platform("linux", "amd64"),)


def parse_platform(text: str) -> Platform:
    parts = text.strip().lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(_PLATFORM_PART.fullmatch(p) for p in parts):
        raise BadReference(f"not a platform such as linux/amd64 or linux/arm/v7, got {text!r}")
    return Platform(*parts)


def chosen_manifests(
    index: Mapping[str, Any], platforms: Sequence[Platform] | None
) -> list[Mapping[str, Any]]:
    """The entries of an image index (or manifest list) to warm: those of C{platforms},
    or every entry for C{None} (all platforms, attestations' C{unknown/unknown} too).
    A platform without a variant matches every variant."""
    entries = [e for e in index.get("manifests", ()) if isinstance(e, Mapping)]
    if platforms is None:
        return entries
    return [e for e in entries if any(p.matches(e.get("platform") or {}) for p in platforms)]


def read_list(lines: Iterable[str]) -> list[str]:
    """Image references from a file: one a line, blank lines and C{#} comments skipped."""
    out = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            out.append(text)
    return out
