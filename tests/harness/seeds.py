"""The standard images the fixtures seed their upstreams with (see upstream.py): small,
deterministic, one of each kind a client meets (OCI image and index, Docker schema 2 image
and manifest list, a private image).
"""

from __future__ import annotations

from pathlib import Path

from tests.harness.images import ImageRecord, IndexRecord, pseudo_random, push_image, push_index
from tests.harness.registry import Registry


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
