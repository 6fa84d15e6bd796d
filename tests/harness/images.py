"""Deterministic test images: OCI layouts built in Python, pushed to a registry with skopeo.

No external tools build anything: layers are gzip'd tars with fixed metadata, so the same
content always gives the same digests. After each push the manifest is read back from the
registry and checked, so the returned records (``ImageRecord``, ``IndexRecord``) describe
exactly what the upstream serves; tests compare what a client got through the proxy with them.

Large blobs are written straight into the registry's filesystem storage (streamed in chunks,
never held in memory) because pushing a gigabyte through skopeo would be slow.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.registry import Registry
from tests.harness.skopeo import skopeo

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "2024-01-01T00:00:00Z"
CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pseudo_random(size: int, seed: int | str) -> bytes:
    """``size`` incompressible bytes that depend only on ``seed`` (sizeable blobs, no tools)."""
    return random.Random(str(seed)).randbytes(size)


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob as a descriptor describes it."""

    digest: str
    size: int
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class LayerRecord(Blob):
    """A layer blob plus the digest of its uncompressed tar (the config's diff_id)."""

    diff_id: str = ""


@dataclass
class ImageRecord:
    """One image manifest as stored upstream: digest, raw bytes, config and layers."""

    name: str  # repository, e.g. "library/alpine"
    tag: str | None  # None for a platform manifest only reachable through an index
    manifest_digest: str
    media_type: str
    manifest: bytes
    config: Blob
    layers: list[LayerRecord]
    platform: dict[str, str] | None = None

    @property
    def ref(self) -> str:
        """``name:tag`` (or ``name@digest`` when untagged), without the registry host."""
        return f"{self.name}:{self.tag}" if self.tag else f"{self.name}@{self.manifest_digest}"

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def blob_digests(self) -> list[str]:
        """Config and layer digests: every blob a full pull of this image fetches."""
        return [self.config.digest, *self.layer_digests]

    @property
    def blobs(self) -> dict[str, int]:
        """digest -> size for the config and every layer."""
        return {self.config.digest: self.config.size} | {x.digest: x.size for x in self.layers}


@dataclass
class IndexRecord:
    """A multi-platform image index as stored upstream, with its platform manifests."""

    name: str
    tag: str
    index_digest: str
    media_type: str
    index: bytes
    manifests: list[ImageRecord] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def manifest_digest(self) -> str:
        """Same name as ImageRecord's: the digest a pull by tag resolves first."""
        return self.index_digest

    def platform(self, architecture: str, os_name: str = "linux") -> ImageRecord:
        """The platform manifest for ``os_name/architecture``."""
        for image in self.manifests:
            p = image.platform or {}
            if p.get("architecture") == architecture and p.get("os") == os_name:
                return image
        raise KeyError(f"{self.ref} has no {os_name}/{architecture} manifest")

    @property
    def blobs(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for image in self.manifests:
            out |= image.blobs
        return out


# -- building OCI layouts -----------------------------------------------------------------------


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """A deterministic tar of ``files`` (path -> content) with parent directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(_fixed(info))
            data = files[path]
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = 0o755 if path.startswith(("bin/", "usr/bin/")) else 0o644
            tar.addfile(_fixed(info), io.BytesIO(data))
    return buf.getvalue()


def _fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 1704067200  # 2024-01-01, a fixed time keeps digests stable
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class OciLayoutBuilder:
    """Writes blobs, manifests and index.json of an OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self.refs: list[dict[str, Any]] = []

    def add_blob(self, data: bytes, media_type: str) -> Blob:
        digest = sha256_digest(data)
        (self.path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return Blob(digest, len(data), media_type)

    def add_layer(self, files: Mapping[str, bytes]) -> LayerRecord:
        """A gzip'd tar layer (gzip mtime 0, so the compressed digest is stable too)."""
        tar = layer_tar(files)
        blob = self.add_blob(gzip.compress(tar, compresslevel=6, mtime=0), OCI_LAYER_GZIP)
        return LayerRecord(blob.digest, blob.size, blob.media_type, diff_id=sha256_digest(tar))

    def add_image(
        self,
        layers: Iterable[Mapping[str, bytes]],
        architecture: str = "amd64",
        os_name: str = "linux",
        config_extra: Mapping[str, Any] | None = None,
    ) -> tuple[Blob, ImageRecord]:
        """Build config and manifest for ``layers`` (each a path -> content mapping)."""
        records = [self.add_layer(files) for files in layers]
        config = {
            "created": CREATED,
            "architecture": architecture,
            "os": os_name,
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [r.diff_id for r in records]},
            "history": [
                {"created": CREATED, "created_by": f"harness layer {i}"}
                for i in range(len(records))
            ],
            **(config_extra or {}),
        }
        config_blob = self.add_blob(json.dumps(config).encode(), OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(config_blob),
            "layers": [_descriptor(r) for r in records],
        }
        raw = json.dumps(manifest, indent=3).encode()
        blob = self.add_blob(raw, OCI_MANIFEST)
        platform = {"architecture": architecture, "os": os_name}
        image = ImageRecord(
            "", None, blob.digest, OCI_MANIFEST, raw, config_blob, records, platform
        )
        return blob, image

    def add_index(self, images: list[tuple[Blob, ImageRecord]]) -> tuple[Blob, bytes]:
        """An OCI image index over platform manifests built with ``add_image``."""
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {**_descriptor(blob), "platform": image.platform} for blob, image in images
            ],
        }
        raw = json.dumps(index, indent=3).encode()
        return self.add_blob(raw, OCI_INDEX), raw

    def tag(self, blob: Blob, ref: str) -> None:
        """Point ``ref`` (the TAG in ``oci:DIR:TAG``) at a manifest or index in index.json."""
        self.refs = [r for r in self.refs if r["annotations"][REF_NAME] != ref]
        self.refs.append({**_descriptor(blob), "annotations": {REF_NAME: ref}})
        index = {"schemaVersion": 2, "manifests": self.refs}
        (self.path / "index.json").write_text(json.dumps(index, indent=2))


def _descriptor(blob: Blob) -> dict[str, Any]:
    return {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}


# -- pushing ------------------------------------------------------------------------------------


def push_layout(
    layout: Path,
    layout_ref: str,
    registry: Registry,
    name: str,
    tag: str,
    creds: tuple[str, str] | None,
    all_images: bool = False,
    manifest_format: str | None = None,
) -> None:
    """``skopeo copy --preserve-digests oci:LAYOUT:REF docker://REGISTRY/NAME:TAG``.

    ``--preserve-digests`` makes skopeo fail rather than silently rewrite a manifest, so the
    digests built here are the ones the registry serves. ``manifest_format="v2s2"`` converts to
    Docker schema 2 instead (new manifest digests; the blobs stay the same).
    """
    args = ["copy", "--quiet", "--dest-tls-verify=false"]
    if manifest_format is None:
        args.append("--preserve-digests")
    else:
        args += ["--format", manifest_format]
    if all_images:
        args.append("--all")
    if creds is not None:
        args += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    else:
        args.append("--dest-no-creds")
    args += [f"oci:{layout}:{layout_ref}", f"docker://{registry.host}/{name}:{tag}"]
    skopeo(*args)


def _check_upstream(
    registry: Registry, name: str, reference: str, digest: str, creds: tuple[str, str] | None
) -> None:
    """Assert the registry serves ``reference`` with exactly the expected digest."""
    resp = registry.get_manifest(name, reference, creds)
    assert resp.status == 200, f"{name}:{reference} after push: {resp}"
    served = resp.header("Docker-Content-Digest")
    assert served == digest == resp.digest, (
        f"{name}:{reference}: registry digest {served}, body {resp.digest}, built {digest}"
    )


LIST_TYPES = (OCI_INDEX, DOCKER_LIST)


def fetch_record(
    registry: Registry,
    name: str,
    reference: str,
    creds: tuple[str, str] | None = None,
) -> ImageRecord | IndexRecord:
    """Describe what the registry serves for ``name:reference`` (manifest or index).

    Used after pushes that let skopeo rewrite manifests, and handy for any upstream content.
    """
    resp = registry.get_manifest(name, reference, creds)
    assert resp.status == 200, f"GET manifest {name}:{reference}: {resp}"
    doc = resp.json()
    media_type = str(doc.get("mediaType") or resp.header("Content-Type"))
    tag = None if reference.startswith("sha256:") else reference
    if media_type in LIST_TYPES:
        children = []
        for entry in doc["manifests"]:
            child = fetch_record(registry, name, entry["digest"], creds)
            assert isinstance(child, ImageRecord)
            child.platform = entry.get("platform")
            children.append(child)
        return IndexRecord(name, tag or "", resp.digest, media_type, resp.body, children)
    config = Blob(doc["config"]["digest"], doc["config"]["size"], doc["config"]["mediaType"])
    blob = registry.get(f"/v2/{name}/blobs/{config.digest}", creds=creds)
    assert blob.status == 200, f"GET config {config.digest}: {blob}"
    config_doc = blob.json()
    diff_ids = config_doc["rootfs"]["diff_ids"]
    layers = [
        LayerRecord(x["digest"], x["size"], x["mediaType"], diff_id)
        for x, diff_id in zip(doc["layers"], diff_ids, strict=True)
    ]
    platform = {"architecture": config_doc["architecture"], "os": config_doc["os"]}
    return ImageRecord(name, tag, resp.digest, media_type, resp.body, config, layers, platform)


def push_image(
    registry: Registry,
    workdir: Path,
    name: str,
    tag: str,
    layers: list[Mapping[str, bytes]],
    creds: tuple[str, str] | None,
    architecture: str = "amd64",
    manifest_format: str | None = None,
) -> ImageRecord:
    """Build a single-platform image from ``layers`` and push it as ``name:tag``.

    The image is OCI unless ``manifest_format`` is "v2s2" (Docker schema 2, converted by skopeo;
    the record is then read back from the registry).
    """
    layout = workdir / f"layout-{name.replace('/', '_')}-{tag}-{uuid.uuid4().hex[:6]}"
    builder = OciLayoutBuilder(layout)
    blob, image = builder.add_image(layers, architecture=architecture)
    builder.tag(blob, tag)
    push_layout(layout, tag, registry, name, tag, creds, manifest_format=manifest_format)
    if manifest_format is not None:
        record = fetch_record(registry, name, tag, creds)
        assert isinstance(record, ImageRecord)
        assert record.blob_digests == image.blob_digests, "skopeo changed blobs"
        return record
    _check_upstream(registry, name, tag, image.manifest_digest, creds)
    image.name, image.tag = name, tag
    return image


def push_index(
    registry: Registry,
    workdir: Path,
    name: str,
    tag: str,
    platforms: Mapping[str, list[Mapping[str, bytes]]],
    creds: tuple[str, str] | None,
    manifest_format: str | None = None,
) -> IndexRecord:
    """Build an index (architecture -> layers, all linux) and push it with ``--all``.

    OCI index unless ``manifest_format`` is "v2s2" (a Docker manifest list, read back after).
    """
    layout = workdir / f"layout-{name.replace('/', '_')}-{tag}-{uuid.uuid4().hex[:6]}"
    builder = OciLayoutBuilder(layout)
    images = [builder.add_image(layers, architecture=arch) for arch, layers in platforms.items()]
    index_blob, raw = builder.add_index(images)
    builder.tag(index_blob, tag)
    push_layout(
        layout, tag, registry, name, tag, creds, all_images=True, manifest_format=manifest_format
    )
    if manifest_format is not None:
        record = fetch_record(registry, name, tag, creds)
        assert isinstance(record, IndexRecord)
        return record
    _check_upstream(registry, name, tag, index_blob.digest, creds)
    records = []
    for _, image in images:
        image.name = name
        _check_upstream(registry, name, image.manifest_digest, image.manifest_digest, creds)
        records.append(image)
    return IndexRecord(name, tag, index_blob.digest, OCI_INDEX, raw, records)


# -- the standard seed images -------------------------------------------------------------------


def seed_alpine(
    registry: Registry, workdir: Path, creds: tuple[str, str] | None, name: str = "library/alpine"
) -> ImageRecord:
    """A small three-layer image, ``library/alpine:3.20`` (pseudo-random payloads, ~0.5 MB)."""
    layers = [
        {
            "bin/busybox": pseudo_random(384 * 1024, "alpine-busybox"),
            "etc/alpine-release": b"3.20.0\n",
        },
        {
            "etc/os-release": b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.0\n',
            "lib/libc.musl-x86_64.so.1": pseudo_random(96 * 1024, "alpine-musl"),
        },
        {"usr/share/harness/README": b"dockerproxy integration-test image\n"},
    ]
    return push_image(registry, workdir, name, "3.20", layers, creds)


def seed_multiarch(
    registry: Registry, workdir: Path, creds: tuple[str, str] | None, name: str = "public/multiarch"
) -> IndexRecord:
    """An OCI index ``public/multiarch:1`` with linux/amd64 and linux/arm64, distinct layers."""
    platforms = {
        arch: [
            {f"bin/tool-{arch}": pseudo_random(128 * 1024, f"multiarch-{arch}-tool")},
            {"etc/arch": f"{arch}\n".encode()},
        ]
        for arch in ("amd64", "arm64")
    }
    return push_index(registry, workdir, name, "1", platforms, creds)


def seed_secret(
    registry: Registry, workdir: Path, creds: tuple[str, str] | None, name: str = "private/secret"
) -> ImageRecord:
    """A private image ``private/secret:1``: anonymous pulls must fail."""
    layers = [
        {"secret/data.bin": pseudo_random(64 * 1024, "secret-data")},
        {"secret/token.txt": b"s3cr3t\n"},
    ]
    return push_image(registry, workdir, name, "1", layers, creds)


def seed_docker_image(
    registry: Registry, workdir: Path, creds: tuple[str, str] | None, name: str = "library/hello"
) -> ImageRecord:
    """A Docker schema 2 image ``library/hello:1`` (most of Docker Hub is not OCI)."""
    layers = [
        {"hello": pseudo_random(32 * 1024, "hello-bin")},
        {"etc/hello.conf": b"greeting=hello\n"},
    ]
    return push_image(registry, workdir, name, "1", layers, creds, manifest_format="v2s2")


def seed_docker_list(
    registry: Registry,
    workdir: Path,
    creds: tuple[str, str] | None,
    name: str = "public/dockerlist",
) -> IndexRecord:
    """A Docker manifest list ``public/dockerlist:1`` (linux/amd64 + linux/arm64)."""
    platforms = {
        arch: [{f"bin/app-{arch}": pseudo_random(48 * 1024, f"dockerlist-{arch}")}]
        for arch in ("amd64", "arm64")
    }
    return push_index(registry, workdir, name, "1", platforms, creds, manifest_format="v2s2")


# -- large blobs written straight into storage ------------------------------------------------


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
    info = _fixed(tarfile.TarInfo(filename))
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
        "config": _descriptor(config_desc),
        "layers": [_descriptor(layer)],
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
    _check_upstream(registry, name, tag, digest, creds)
    platform = {"architecture": "amd64", "os": "linux"}
    return ImageRecord(name, tag, digest, OCI_MANIFEST, raw, config_desc, [layer], platform)
