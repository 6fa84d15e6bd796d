"""Repository names, references and digests, validated by the distribution grammar.

The proxy rebuilds every upstream path from components that matched these
expressions, so nothing a client puts in a path (dot segments, percent escapes,
extra slashes) ever reaches an upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dockerproxy import digests, errors
from dockerproxy.digests import Digest

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]+")
# A registry as clients name it (config keys, containerd's ns): a host name, maybe a port.
REGISTRY_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?")
MAX_NAME_LENGTH = 255
RepoKey = tuple[str, str]  # a repository as cached: (upstream name, repository there)

_ROUTE_RE = re.compile(
    r"/v2/(?P<name>.+?)/(?:"
    r"(?P<uploads>blobs/uploads)(?:/.*)?"
    r"|(?P<kind>manifests|blobs)/(?P<ref>[^/]+)"
    r"|(?P<tags>tags)/list"
    r"|(?P<referrers>referrers)/(?P<subject>[^/]+)"
    r")"
)

Kind = Literal["manifests", "blobs", "tags", "uploads", "referrers"]


@dataclass(frozen=True)
class ApiPath:
    """A parsed C{/v2/<name>/...} path; C{digest} is the reference as a digest the proxy
    can verify (C{None} for tags, tag lists and digests of other algorithms). For
    C{referrers} (OCI 1.1), the reference is the subject manifest's digest."""

    name: str
    kind: Kind
    reference: str | None = None
    digest: Digest | None = None


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and NAME_RE.fullmatch(name) is not None


def is_valid_digest(digest: str) -> bool:
    """True for a well-formed digest; one of a known algorithm (L{digests.ALGORITHMS}) must
    also be lowercase hex of the right length."""
    if DIGEST_RE.fullmatch(digest) is None:
        return False
    if digest.partition(":")[0] not in digests.ALGORITHMS:
        return True
    return digests.parse_or_none(digest) is not None


def is_valid_reference(reference: str) -> bool:
    return TAG_RE.fullmatch(reference) is not None or is_valid_digest(reference)


def parse_api_path(path: str) -> ApiPath:
    """Split a raw request path into name, kind and reference, or raise a 400/404 error."""
    if path.rstrip("/") == "/v2/_catalog":
        raise errors.unsupported("this proxy does not serve the catalog")
    match = _ROUTE_RE.fullmatch(path)
    if match is None:
        raise errors.RegistryError(404, "NOT_FOUND", "unknown registry API path", {"path": path})
    name = match["name"]
    if not is_valid_name(name):
        raise errors.name_invalid(name)
    if match["uploads"]:
        return ApiPath(name, "uploads")
    if match["tags"]:
        return ApiPath(name, "tags")
    if match["referrers"]:
        subject = match["subject"]
        if not is_valid_digest(subject):
            raise errors.digest_invalid(subject)
        return ApiPath(name, "referrers", subject, digests.parse_or_none(subject))
    kind: Kind = "manifests" if match["kind"] == "manifests" else "blobs"
    reference = match["ref"]
    if kind == "blobs" and not is_valid_digest(reference):
        raise errors.digest_invalid(reference)
    if kind == "manifests" and not is_valid_reference(reference):
        # Registries route only tags and digests, so anything else is a manifest they do
        # not have: what the OCI conformance suite expects, and never asked upstream.
        raise errors.RegistryError(
            404,
            "MANIFEST_UNKNOWN",
            "no such manifest: not a tag or a digest",
            {"reference": reference},
        )
    return ApiPath(name, kind, reference, digests.parse_or_none(reference))
