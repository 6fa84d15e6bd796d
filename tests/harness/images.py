"""Deterministic test images: OCI layouts built in Python, pushed to a registry with skopeo.

No external tools build anything: layers are gzip'd tars with fixed metadata, so the same
content always gives the same digests. After each push the manifest is read back from the
registry and checked, so the returned records (``ImageRecord``, ``IndexRecord``) describe
exactly what the upstream serves; tests compare what a client got through the proxy with them.

The standard images the fixtures seed are in seeds.py; large blobs, written straight into a
registry's storage, in largeblobs.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
import uuid
from collections.abc import Iterable, Mapping
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
                    tar.addfile(fixed_tarinfo(info))
            data = files[path]
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = 0o755 if path.startswith(("bin/", "usr/bin/")) else 0o644
            tar.addfile(fixed_tarinfo(info), io.BytesIO(data))
    return buf.getvalue()


def fixed_tarinfo(info: tarfile.TarInfo) -> tarfile.TarInfo:
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
            "config": descriptor(config_blob),
            "layers": [descriptor(r) for r in records],
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
                {**descriptor(blob), "platform": image.platform} for blob, image in images
            ],
        }
        raw = json.dumps(index, indent=3).encode()
        return self.add_blob(raw, OCI_INDEX), raw

    def tag(self, blob: Blob, ref: str) -> None:
        """Point ``ref`` (the TAG in ``oci:DIR:TAG``) at a manifest or index in index.json."""
        self.refs = [r for r in self.refs if r["annotations"][REF_NAME] != ref]
        self.refs.append({**descriptor(blob), "annotations": {REF_NAME: ref}})
        index = {"schemaVersion": 2, "manifests": self.refs}
        (self.path / "index.json").write_text(json.dumps(index, indent=2))


def descriptor(blob: Blob) -> dict[str, Any]:
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


def check_upstream(
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
    check_upstream(registry, name, tag, image.manifest_digest, creds)
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
    check_upstream(registry, name, tag, index_blob.digest, creds)
    records = []
    for _, image in images:
        image.name = name
        check_upstream(registry, name, image.manifest_digest, image.manifest_digest, creds)
        records.append(image)
    return IndexRecord(name, tag, index_blob.digest, OCI_INDEX, raw, records)
