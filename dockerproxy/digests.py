"""Content digests the proxy can verify: one value type, the algorithms listed once.

A L{Digest} can only hold an algorithm the proxy hashes with and lowercase hex of
that algorithm's exact length, so anything holding one may use it as a file name
or an object key. Client input is parsed into one at the edge
(L{dockerproxy.names.parse_api_path}); the grammar also accepts digests of other
algorithms (C{multihash+base58:...}), which never become a L{Digest} and are
relayed, never cached.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

# The algorithms OCI registers, and the length of their hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX_RE = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, slots=True)
class Digest:
    """C{algorithm:hex}, checked when made: C{ValueError} for anything else."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        length = ALGORITHMS.get(self.algorithm)
        if length is None or len(self.hex) != length or not _HEX_RE.fullmatch(self.hex):
            raise ValueError(f"unsupported or malformed digest {self.algorithm}:{self.hex!r}")

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Any:
        """A fresh hash object of this digest's algorithm (C{hashlib}'s)."""
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        return of(data, self.algorithm) == self


def parse(text: str) -> Digest:
    """The L{Digest} C{text} spells; C{ValueError} unless it is a known algorithm and hex."""
    algorithm, sep, encoded = text.partition(":")
    if not sep:
        raise ValueError(f"not a digest: {text!r}")
    return Digest(algorithm, encoded)


def parse_or_none(text: str) -> Digest | None:
    """L{parse}, or C{None} for text that is not a digest the proxy can verify."""
    try:
        return parse(text)
    except ValueError:
        return None


def of(data: bytes, algorithm: str = "sha256") -> Digest:
    """The digest of C{data}."""
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())
