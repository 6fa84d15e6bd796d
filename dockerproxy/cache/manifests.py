"""The local manifest and tag store: small documents in the cache store's meta area.

Manifests are kept as their exact bytes (their digest is over them) with their
media type, under C{meta/manifests/<alg>/<hex>}; a tag maps to one manifest
digest per media type, with the time it was last confirmed upstream, under
C{meta/tags/<sha256 of upstream, repository and tag>}. Which entry a client gets
(its Accept) and when one is stale is the mirror's business.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from dockerproxy.cache.documents import Documents
from dockerproxy.digests import Digest, parse_or_none
from dockerproxy.names import RepoKey


@dataclass(frozen=True)
class CachedManifest:
    digest: Digest
    media_type: str
    data: bytes


@dataclass(frozen=True)
class TagEntry:
    digest: Digest
    media_type: str
    checked: float


class ManifestStore:
    """Manifests by digest and tag entries, as small documents in the store's meta area
    (written off the reactor, read back at once: see L{Documents})."""

    def __init__(self, store: Documents) -> None:
        self.store = store

    def get(self, digest: Digest) -> CachedManifest | None:
        document = self.store.read_meta(f"manifests/{digest.algorithm}/{digest.hex}")
        if not isinstance(document, dict):
            return None
        try:
            data = base64.b64decode(document["data"])
        except (KeyError, ValueError):
            return None
        if not digest.matches(data):
            return None  # a damaged document is a miss, never served
        return CachedManifest(digest, str(document.get("media_type", "")), data)

    def put(self, manifest: CachedManifest) -> None:
        digest = manifest.digest
        self.store.write_meta(
            f"manifests/{digest.algorithm}/{digest.hex}",
            {
                "media_type": manifest.media_type,
                "data": base64.b64encode(manifest.data).decode("ascii"),
            },
        )

    def set_tag(self, repo: RepoKey, tag: str, entry: TagEntry) -> None:
        """One entry per media type: an index and a single manifest may share a tag."""
        entries = [e for e in self.tag_entries(repo, tag) if e.media_type != entry.media_type]
        entries.append(entry)
        self.store.write_meta(
            _tag_key(repo, tag),
            {
                "upstream": repo[0],
                "repository": repo[1],
                "tag": tag,
                "entries": [
                    {"digest": str(e.digest), "media_type": e.media_type, "checked": e.checked}
                    for e in entries
                ],
            },
        )

    def tag_entries(self, repo: RepoKey, tag: str) -> list[TagEntry]:
        """C{tag}'s entries, one per media type (readable ones: a damaged one is skipped)."""
        document = self.store.read_meta(_tag_key(repo, tag))
        if not isinstance(document, dict):
            return []
        entries = []
        for raw in document.get("entries", []):
            try:
                digest = parse_or_none(str(raw["digest"]))
                if digest is not None:
                    entries.append(TagEntry(digest, str(raw["media_type"]), float(raw["checked"])))
            except (KeyError, TypeError, ValueError):
                continue
        return entries


def _tag_key(repo: RepoKey, tag: str) -> str:
    return "tags/" + hashlib.sha256("\0".join((*repo, tag)).encode()).hexdigest()
