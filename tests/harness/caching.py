"""A caching proxy seen from outside, for the cache's integration tests: its directory
(``blobs/<alg>/<xx>/<hex>`` committed, ``tmp/`` partial fills), blob GETs through it that
hash the body as it arrives, and what it and the upstream logged."""

from __future__ import annotations

import hashlib
import http.client
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import web
from tests.harness.images import Blob
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.registry import Registry
from tests.harness.upstream import Creds, Upstream

MiB = 1 << 20
CHUNK = MiB
BLOB_OR_MANIFEST = re.compile(r"^/v2/.+/(blobs|manifests)/")


def no_images(registry: Registry, workdir: Path, creds: Creds | None) -> dict[str, Any]:
    """Seeder for per-test upstreams that only get blobs placed with ``put_large_blob``."""
    return {}


def mirror_of(
    start_proxy: StartProxy, upstream_url: str, cache_dir: Path, *args: str, **kwargs: Any
) -> ProxyProcess:
    """A caching proxy for ``upstream_url`` (short names completed with library/)."""
    return start_proxy(
        "--upstream",
        upstream_url,
        "--library-prefix",
        "--log-format",
        "json",
        "--cache-dir",
        str(cache_dir),
        *args,
        **kwargs,
    )


def upstream_gets(upstream: Upstream, mark: Any, pattern: str = "") -> list[str]:
    """Paths of the blob and manifest GETs the upstream registry served since ``mark``."""
    rx = re.compile(pattern)
    return [
        path
        for method, path in upstream.requests(mark)
        if method == "GET" and BLOB_OR_MANIFEST.match(path) and rx.search(path)
    ]


def committed_blobs(cache_dir: Path) -> dict[str, int]:
    """digest -> size of every file under the cache's ``blobs/``."""
    out: dict[str, int] = {}
    root = cache_dir / "blobs"
    if root.is_dir():
        for path in root.rglob("*"):
            if path.is_file():
                out[f"{path.parent.parent.name}:{path.name}"] = path.stat().st_size
    return out


def committed_path(cache_dir: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return cache_dir / "blobs" / algorithm / hexdigest[:2] / hexdigest


def partials(cache_dir: Path) -> list[Path]:
    """The blob fills under way (or killed): metadata written through ``tmp/`` is not one."""
    tmp = cache_dir / "tmp"
    return sorted(p for p in tmp.glob("fill-*.partial") if p.is_file()) if tmp.is_dir() else []


def anonymous_token(proxy: ProxyProcess, name: str) -> str:
    """A pull token for ``name`` from the proxy's token endpoint, as a client gets it."""
    response = web.request("GET", f"{proxy.url}/v2/auth?scope=repository:{name}:pull")
    assert response.status == 200, response
    return str(response.json()["token"])


@dataclass
class Fetch:
    """One streamed blob GET: the body is hashed as it arrives, never held."""

    status: int = 0
    length: int = 0
    digest: str = ""
    error: BaseException | None = None
    first_mib_at: float | None = None  # time.monotonic() when the first MiB had arrived

    def is_whole(self, blob: Blob) -> bool:
        """A 200 whose body is all of ``blob``, its digest verified, with no error."""
        return (self.status, self.length, self.digest, self.error) == (
            200,
            blob.size,
            blob.digest,
            None,
        )


def fetch_blob(
    proxy: ProxyProcess,
    name: str,
    digest: str,
    token: str,
    first_mib: threading.Event | None = None,
    resume: threading.Event | None = None,
    timeout: float = 120,
) -> Fetch:
    """GET a blob through the proxy with http.client, hashing it in 1 MiB chunks.

    ``first_mib`` is set once the first MiB arrived; the client then waits for ``resume``
    (if given) before reading on. A broken body ends in ``error`` (IncompleteRead, reset...).
    """
    result = Fetch()
    sha = hashlib.sha256()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.request(
            "GET", f"/v2/{name}/blobs/{digest}", headers={"Authorization": f"Bearer {token}"}
        )
        response = conn.getresponse()
        result.status = response.status
        while chunk := response.read(CHUNK):
            sha.update(chunk)
            result.length += len(chunk)
            if result.first_mib_at is None and result.length >= MiB:
                result.first_mib_at = time.monotonic()
                if first_mib is not None:
                    first_mib.set()
                if resume is not None:
                    resume.wait(timeout)
        # http.client ends read() quietly at a premature close: compare with Content-Length.
        announced = response.getheader("content-length")
        if announced is not None and int(announced) != result.length:
            result.error = http.client.IncompleteRead(b"", int(announced) - result.length)
    except (OSError, http.client.HTTPException) as e:
        result.error = e
    finally:
        conn.close()
        if first_mib is not None:
            first_mib.set()  # never leave a waiting test hanging
    result.digest = "sha256:" + sha.hexdigest()
    return result


class BackgroundFetch(threading.Thread):
    """``fetch_blob`` on a thread of its own, for a test to act while the body streams.

    ``first_mib`` is set once the first MiB arrived (or the fetch ended); with ``hold`` the
    client then waits for ``resume`` before it reads on. ``result`` is set when it ends.
    """

    def __init__(
        self,
        proxy: ProxyProcess,
        name: str,
        digest: str,
        token: str,
        hold: bool = False,
        timeout: float = 120,
    ) -> None:
        super().__init__(daemon=True)
        self.first_mib = threading.Event()
        self.resume = threading.Event()
        self.result: Fetch | None = None
        self._request = (proxy, name, digest, token)
        self._hold = hold
        self._timeout = timeout

    def run(self) -> None:
        resume = self.resume if self._hold else None
        self.result = fetch_blob(*self._request, self.first_mib, resume, self._timeout)


def assert_fetched_from_upstream(
    proxy: ProxyProcess, upstream: Upstream, name: str, blob: Blob, token: str
) -> None:
    """GET ``blob`` through ``proxy`` when it is not cached: all of it arrives, verified,
    and exactly one GET of it reaches ``upstream``."""
    mark = upstream.log_mark()
    fetched = fetch_blob(proxy, name, blob.digest, token)
    assert fetched.is_whole(blob), fetched
    gets = upstream_gets(upstream, mark, re.escape(blob.digest))
    assert len(gets) == 1, f"{len(gets)} upstream GETs of {blob.digest}: {gets}"


def cache_events(proxy: ProxyProcess, method: str = "GET") -> list[tuple[str, str]]:
    """(path, cache status) of the proxy's blob and manifest requests with ``method``."""
    proxy.proc.wait_log_quiet(0.2)
    return [
        (str(e["path"]), str(e["cache"]))
        for e in proxy.access_events()
        if e["method"] == method and BLOB_OR_MANIFEST.match(str(e["path"]))
    ]
