"""The upstream of every benchmark: docker-registry with pseudo-random blobs written
straight into its storage, in the public repository C{bench/blob}, and a manifest
pushed over its API.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from processes import Proc, Procs, free_port, response_head, wait_http

REPO = "bench/blob"
MiB = 1024 * 1024
SEED = 20261127
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass
class Registry:
    """A running docker-registry and the blobs in it."""

    proc: Proc
    port: int
    storage: Path
    digests: list[str]  # hex sha256 of each blob, the first one written first

    def blob_path(self, index: int = 0) -> str:
        return f"/v2/{REPO}/blobs/sha256:{self.digests[index]}"


def start_registry(
    procs: Procs, work: Path, size: int, blobs: int = 1, access_log: bool = False
) -> Registry:
    """docker-registry on a free port, storage in C{work}, with C{blobs} blobs of C{size}.

    Each blob is checked to be served whole; C{access_log} logs every request (a HEAD
    check is not a GET: the benchmarks count the blob GETs that reach the registry).
    """
    t0 = time.monotonic()
    proc, port, storage = serve(procs, work, access_log)
    digests = [write_blob(storage, size, seed=SEED + i) for i in range(blobs)]
    print(
        f"{'blob' if blobs == 1 else f'{blobs} blobs'} "
        f"{', '.join('sha256:' + d for d in digests)} ({size} bytes"
        f"{'' if blobs == 1 else ' each'}) written in {time.monotonic() - t0:.1f}s to {storage}",
        flush=True,
    )
    registry = Registry(proc, port, storage, digests)
    for i in range(blobs):
        status, headers = response_head(port, registry.blob_path(i), method="HEAD")
        if status != 200 or int(headers.get("content-length", -1)) != size:
            raise RuntimeError(f"registry HEAD {registry.blob_path(i)}: {status} {headers}")
    return registry


def serve(procs: Procs, work: Path, access_log: bool) -> tuple[Proc, int, Path]:
    """docker-registry on a free port, its storage (still empty) in C{work}."""
    storage = work / "registry-storage"
    storage.mkdir()
    port = free_port()
    config = {
        "version": "0.1",
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": not access_log}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "maintenance": {"uploadpurging": {"enabled": False}},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "bench-http-secret"},
    }
    config_path = work / "registry.yml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    proc = procs.start(Proc("registry", ["docker-registry", "serve", config_path], work))
    wait_http(port, "/v2/", proc)
    return proc, port, storage


def write_blob(storage: Path, size: int, seed: int = SEED) -> str:
    """Write C{size} bytes of pseudo-random data into registry storage; return its hex digest.

    A 1 MiB random block, rotated by a different offset for each chunk: deterministic,
    incompressible to gzip/zstd-style compressors, and never held in memory as a whole.
    """
    block = random.Random(seed).randbytes(MiB)
    blobs = storage / "docker/registry/v2/blobs/sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / "incoming.tmp"
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        written, i = 0, 0
        while written < size:
            off = (i * 7919 * 64) % MiB
            chunk = block[off:] + block[:off]
            chunk = chunk[: size - written]
            digest.update(chunk)
            f.write(chunk)
            written += len(chunk)
            i += 1
    hexdigest = digest.hexdigest()
    target = blobs / hexdigest[:2] / hexdigest
    target.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target / "data")
    link = storage / f"docker/registry/v2/repositories/{REPO}/_layers/sha256/{hexdigest}"
    link.mkdir(parents=True, exist_ok=True)
    (link / "link").write_text(f"sha256:{hexdigest}")
    return hexdigest


def push_manifest(port: int, layer_hex: str, layer_size: int) -> str:
    """Push a config blob and a manifest naming it and one layer; return the manifest digest."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", f"/v2/{REPO}/blobs/uploads/")
        response = conn.getresponse()
        response.read()
        location = response.getheader("location") or ""
        if response.status != 202 or not location:
            raise RuntimeError(f"registry: upload start answered {response.status}")
        path = location.split(f"127.0.0.1:{port}", 1)[-1]
        separator = "&" if "?" in path else "?"
        conn.request(
            "PUT",
            f"{path}{separator}digest={config_digest}",
            body=config,
            headers={"content-type": "application/octet-stream"},
        )
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"registry: config upload answered {response.status}")
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": f"sha256:{layer_hex}",
                        "size": layer_size,
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        conn.request(
            "PUT",
            f"/v2/{REPO}/manifests/latest",
            body=manifest,
            headers={"content-type": OCI_MANIFEST},
        )
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"registry: manifest push answered {response.status}")
        return "sha256:" + hashlib.sha256(manifest).hexdigest()
    finally:
        conn.close()
