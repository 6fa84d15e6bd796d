"""Large blobs written straight into a registry's filesystem storage, streamed in chunks and
never held in memory (pushing a gigabyte through skopeo would be slow), and an image whose one
layer is such a blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tarfile
import uuid
from collections.abc import Iterable, Iterator

from tests.harness.images import (
    CREATED,
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    Blob,
    ImageRecord,
    LayerRecord,
    check_upstream,
    descriptor,
    fixed_tarinfo,
    sha256_digest,
)
from tests.harness.registry import Registry

CHUNK = 1 << 20


def deterministic_chunks(size: int, seed: int | str = 0, chunk: int = CHUNK) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in ``chunk``-sized pieces, reproducible from ``seed``.

    One random block is generated; each chunk is that block prefixed with its index, so chunks
    differ (a misplaced chunk changes the digest) while generation stays cheap.
    """
    block = random.Random(f"chunks-{seed}").randbytes(chunk)
    offset = index = 0
    while offset < size:
        n = min(chunk, size - offset)
        piece = (f"{seed}:{index:016d}:".encode() + block)[:n]
        yield piece
        offset += n
        index += 1


def write_blob(registry: Registry, name: str, chunks: Iterable[bytes]) -> Blob:
    """Store a blob (streamed) in the registry's storage and link it into repository ``name``.

    Writes ``blobs/sha256/XX/HEX/data`` (via a temp file, renamed once the digest is known) and
    ``repositories/NAME/_layers/sha256/HEX/link``, which is all a GET blob request needs.
    """
    v2 = registry.storage / "docker" / "registry" / "v2"
    tmp_dir = registry.storage / "harness-tmp"  # same filesystem, outside the layout
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / uuid.uuid4().hex
    sha = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as f:
        for piece in chunks:
            sha.update(piece)
            f.write(piece)
            size += len(piece)
    digest = "sha256:" + sha.hexdigest()
    target = registry.blob_path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    link = v2 / "repositories" / name / "_layers" / "sha256" / sha.hexdigest() / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)
    return Blob(digest, size)


def put_large_blob(registry: Registry, name: str, size: int, seed: int | str = 0) -> Blob:
    """Place ``size`` deterministic bytes as a blob of repository ``name``; returns digest/size."""
    return write_blob(registry, name, deterministic_chunks(size, seed))


def _tar_stream(filename: str, size: int, seed: int | str) -> Iterator[bytes]:
    """An uncompressed tar holding one ``size``-byte file, generated on the fly."""
    info = fixed_tarinfo(tarfile.TarInfo(filename))
    info.size = size
    info.mode = 0o644
    yield info.tobuf(format=tarfile.USTAR_FORMAT)
    yield from deterministic_chunks(size, seed)
    yield b"\0" * ((-size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


def put_large_image(
    registry: Registry,
    name: str,
    tag: str,
    size: int,
    creds: tuple[str, str] | None,
    seed: int | str = 0,
) -> ImageRecord:
    """An image whose single layer is an uncompressed tar with one ``size``-byte file.

    Blobs go straight into storage; the manifest is PUT over HTTP (with ``creds`` for push), so
    clients can pull it like any image. The layer is uncompressed (media type ...layer.v1.tar):
    ``skopeo copy`` into ``oci:`` needs ``--dest-oci-accept-uncompressed-layers`` or it gzips
    the gigabyte.
    """
    layer_blob = write_blob(registry, name, _tar_stream("large.bin", size, seed))
    layer = LayerRecord(layer_blob.digest, layer_blob.size, OCI_LAYER_TAR, layer_blob.digest)
    config = {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }
    config_bytes = json.dumps(config).encode()
    config_blob = write_blob(registry, name, [config_bytes])
    config_desc = Blob(config_blob.digest, config_blob.size, OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_desc),
        "layers": [descriptor(layer)],
    }
    raw = json.dumps(manifest, indent=3).encode()
    scopes = [f"repository:{name}:pull,push"]
    resp = registry.get(
        f"/v2/{name}/manifests/{tag}",
        method="PUT",
        scopes=scopes,
        creds=creds,
        headers=[("Content-Type", OCI_MANIFEST)],
        body=raw,
    )
    assert resp.status == 201, f"PUT manifest {name}:{tag}: {resp}"
    digest = sha256_digest(raw)
    check_upstream(registry, name, tag, digest, creds)
    platform = {"architecture": "amd64", "os": "linux"}
    return ImageRecord(name, tag, digest, OCI_MANIFEST, raw, config_desc, [layer], platform)
