"""Running skopeo in tests, and reading the OCI layouts it writes.

skopeo is isolated from the machine's configuration: an empty auth file (no stored logins) and
an empty registries.conf (no mirrors or short-name rules), so results depend only on the test.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 120.0
_ISOLATION: dict[str, str] = {}


def skopeo_env() -> dict[str, str]:
    """Environment for skopeo: the caller's, plus an empty auth file and registries.conf."""
    if not _ISOLATION:
        base = Path(tempfile.mkdtemp(prefix="harness-skopeo-"))
        atexit.register(shutil.rmtree, base, True)
        (base / "auth.json").write_text('{"auths": {}}')
        (base / "registries.conf").write_text("")
        _ISOLATION.update(
            {
                "REGISTRY_AUTH_FILE": str(base / "auth.json"),
                "CONTAINERS_REGISTRIES_CONF": str(base / "registries.conf"),
            }
        )
    return {**os.environ, **_ISOLATION}


def skopeo(
    *args: str,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``skopeo ARGS`` and return the CompletedProcess (text output captured).

    With ``check`` (the default) a non-zero exit raises AssertionError quoting the command and
    its output; pass ``check=False`` to assert on failures yourself. A timeout also raises
    AssertionError (the process is killed by subprocess.run).
    """
    argv = ["skopeo", *[str(a) for a in args]]
    full_env = skopeo_env()
    if env:
        full_env.update(env)
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"timed out after {timeout}s: {' '.join(argv)}\n"
            f"stdout:\n{_text(exc.stdout)}\nstderr:\n{_text(exc.stderr)}"
        ) from None
    if check and result.returncode != 0:
        raise AssertionError(describe(result))
    return result


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """Command, exit status and output of a finished process, for assertion messages."""
    argv = result.args if isinstance(result.args, list) else [str(result.args)]
    return (
        f"{' '.join(str(a) for a in argv)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


@dataclass
class OciLayout:
    """What an ``oci:DIR`` layout contains: refs from index.json and every blob's size."""

    path: Path
    manifests: list[dict[str, Any]]  # index.json "manifests" descriptors
    blobs: dict[str, int] = field(default_factory=dict)  # digest -> size on disk

    @property
    def manifest_digests(self) -> list[str]:
        """Digests index.json points to (an index digest after ``copy --all`` of a list)."""
        return [str(m["digest"]) for m in self.manifests]

    def ref(self, name: str) -> dict[str, Any]:
        """The index.json descriptor tagged ``name`` (org.opencontainers.image.ref.name)."""
        for m in self.manifests:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
                return m
        raise KeyError(f"no ref {name!r} in {self.path}/index.json: {self.manifests}")

    def blob_path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        return self.path / "blobs" / algo / hexdigest

    def read_json(self, digest: str) -> Any:
        """Parse a JSON blob (manifest, index or config) from the layout."""
        return json.loads(self.blob_path(digest).read_bytes())

    def layer_digests(self, manifest_digest: str) -> list[str]:
        """The layer digests of one image manifest stored in the layout."""
        return [str(layer["digest"]) for layer in self.read_json(manifest_digest)["layers"]]

    def verify(self) -> None:
        """Assert every blob's content hashes to its file name (catches corrupt transfers)."""
        for digest in self.blobs:
            algo, _, hexdigest = digest.partition(":")
            sha = hashlib.new(algo)
            with open(self.blob_path(digest), "rb") as f:
                while chunk := f.read(1 << 20):
                    sha.update(chunk)
            assert sha.hexdigest() == hexdigest, f"blob {digest} in {self.path} is corrupt"


def oci_digests(directory: Path | str, verify: bool = False) -> OciLayout:
    """Read an OCI layout written by ``skopeo copy ... oci:DIR:TAG``.

    ``verify`` also re-hashes every blob (slow for gigabyte layers).
    """
    path = Path(directory)
    index = json.loads((path / "index.json").read_text())
    blobs: dict[str, int] = {}
    blob_root = path / "blobs"
    if blob_root.is_dir():
        for algo_dir in sorted(blob_root.iterdir()):
            for blob in sorted(algo_dir.iterdir()):
                blobs[f"{algo_dir.name}:{blob.name}"] = blob.stat().st_size
    layout = OciLayout(path, list(index.get("manifests", [])), blobs)
    if verify:
        layout.verify()
    return layout
