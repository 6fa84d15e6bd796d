"""Pulling through the proxy with skopeo, and checking what arrived against what was seeded."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness.images import ImageRecord, IndexRecord
from tests.harness.proxy import ProxyProcess
from tests.harness.skopeo import oci_digests, skopeo


def copy(
    proxy: ProxyProcess, ref: str, dest: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``skopeo copy`` of ``ref`` through the plain-HTTP ``proxy`` into an OCI layout."""
    return skopeo(
        "copy",
        "--src-tls-verify=false",
        *args,
        f"docker://{proxy.host}/{ref}",
        f"oci:{dest}:x",
        check=check,
    )


def assert_same_image(layout_dir: Path, image: ImageRecord) -> None:
    """The layout holds exactly ``image``'s manifest and every one of its blobs, verified."""
    layout = oci_digests(layout_dir, verify=True)
    assert layout.manifest_digests == [image.manifest_digest]
    for digest, size in image.blobs.items():
        assert layout.blobs.get(digest) == size, digest


def assert_same_index(layout_dir: Path, index: IndexRecord) -> None:
    """The layout holds ``index`` (pulled with ``--all``): its manifests and blobs, verified."""
    layout = oci_digests(layout_dir, verify=True)
    assert layout.manifest_digests == [index.index_digest]
    for digest, size in index.blobs.items():
        assert layout.blobs.get(digest) == size, digest
    for image in index.manifests:
        assert image.manifest_digest in layout.blobs
