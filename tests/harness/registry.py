"""docker-registry (distribution 2.8.2) as the real upstream in integration tests.

The registry stores into a temporary filesystem root, listens on a free loopback port, logs at
debug level and, unless started without auth, uses token auth against a ``TokenServer``. The
``redirect`` storage middleware can be enabled so that blob GETs/HEADs answer 307 to a CDN.

``Registry.requests()`` parses the registry's access log (one combined-format line per request,
written after the response) so tests can count what reached the upstream.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tests.harness import web
from tests.harness.ports import free_port, wait_for_port
from tests.harness.procs import ManagedProcess
from tests.harness.tls import TestCA
from tests.harness.tokenauth import TokenServer

# 127.0.0.1 - - [27/Nov/2026:19:42:57 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<size>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)

MANIFEST_ACCEPT = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]


class LoggedRequest(NamedTuple):
    """One access-log line of the registry."""

    method: str
    path: str  # with the query string, as the client sent it
    status: int
    size: int
    user_agent: str


def parse_access_log(text: str) -> list[LoggedRequest]:
    """Extract the combined-format access lines from a registry log (other lines are skipped)."""
    out = []
    for line in text.splitlines():
        m = _ACCESS_LINE.match(line)
        if m:
            size = m["size"]
            out.append(
                LoggedRequest(
                    m["method"],
                    m["uri"],
                    int(m["status"]),
                    int(size) if size != "-" else 0,
                    m["agent"],
                )
            )
    return out


def blob_storage_path(digest: str) -> str:
    """Path of a blob's data below the storage root; also the redirect middleware's URL path."""
    algo, _, hexdigest = digest.partition(":")
    return f"/docker/registry/v2/blobs/{algo}/{hexdigest[:2]}/{hexdigest}/data"


@dataclass
class Registry:
    """A running docker-registry process and how to reach and inspect it."""

    port: int
    storage: Path  # the filesystem driver's rootdirectory
    config_path: Path
    process: ManagedProcess
    auth: TokenServer | None = None
    redirect_baseurl: str | None = None
    tls: TestCA | None = None  # serves HTTPS with this CA's server certificate

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def blob_path(self, digest: str) -> Path:
        """The file that holds a blob's bytes in this registry's storage."""
        return self.storage / blob_storage_path(digest).lstrip("/")

    # -- log ---------------------------------------------------------------------------------

    def log_mark(self) -> int:
        """A log position; ``requests(since=mark)`` then shows only requests made after it."""
        return self.process.log_size()

    def responses(self, since: int = 0, settle: float = 0.2) -> list[LoggedRequest]:
        """Access-log entries (method, path, status, size, user agent) after ``since``.

        The registry logs a request after its response is sent, so a client may finish first;
        ``settle`` waits until the log has stopped growing for that long (at most 5 s); pass 0
        when nothing can be in flight.
        """
        self.process.wait_log_quiet(settle)
        return parse_access_log(self.process.log_text(since))

    def requests(self, since: int = 0, settle: float = 0.2) -> list[tuple[str, str]]:
        """(method, path-with-query) of every request the registry served after ``since``."""
        return [(r.method, r.path) for r in self.responses(since, settle)]

    def count(
        self, method: str | None = None, pattern: str = "", since: int = 0, settle: float = 0.2
    ) -> int:
        """How many requests matched ``method`` (None = any) and the regex ``pattern`` (search)."""
        rx = re.compile(pattern)
        return sum(
            1
            for r in self.responses(since, settle)
            if (method is None or r.method == method) and rx.search(r.path)
        )

    # -- direct HTTP access (bypassing any proxy) ---------------------------------------------

    def token(self, scopes: list[str], creds: tuple[str, str] | None = None) -> str | None:
        """A bearer token for ``scopes`` from this registry's token server (None without auth)."""
        if self.auth is None:
            return None
        return self.auth.fetch_token(scopes, creds)

    def get(
        self,
        path: str,
        method: str = "GET",
        scopes: list[str] | None = None,
        creds: tuple[str, str] | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        digest_body: bool = False,
    ) -> web.Response:
        """One request to the registry, with a token for ``scopes`` when auth is on.

        ``scopes`` defaults to pull on the repository named in a ``/v2/NAME/...`` path.
        """
        hdrs = list(headers or [])
        if self.auth is not None:
            if scopes is None:
                m = re.match(r"^/v2/(.+)/(?:manifests|blobs|tags)/", path)
                scopes = [f"repository:{m[1]}:pull"] if m else []
            hdrs.append(("Authorization", f"Bearer {self.token(scopes, creds)}"))
        return web.request(method, self.url + path, hdrs, body, digest_body=digest_body)

    def get_manifest(
        self, name: str, reference: str, creds: tuple[str, str] | None = None
    ) -> web.Response:
        """GET a manifest accepting every modern manifest type."""
        headers = [("Accept", t) for t in MANIFEST_ACCEPT]
        return self.get(f"/v2/{name}/manifests/{reference}", creds=creds, headers=headers)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the log without debug lines (those are long and numerous)."""
        return self.process.log_tail(lines, skip="level=debug")

    def stop(self) -> None:
        """Stop the registry (idempotent); e.g. to test an unreachable upstream."""
        self.process.stop()

    def restart(self) -> None:
        """Start it again on the same port with the same storage and wait until it listens."""
        self.process.restart()
        wait_for_port(self.port, timeout=15, alive=self.process.exit_problem)


def registry_config(
    storage: Path,
    port: int,
    auth: TokenServer | None = None,
    redirect_baseurl: str | None = None,
    tls: TestCA | None = None,
) -> dict[str, object]:
    """The registry configuration (written as JSON, which YAML parsers accept)."""
    config: dict[str, object] = {
        "version": "0.1",
        "log": {"level": "debug", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "harness-http-secret"},
    }
    if tls is not None:
        config["http"]["tls"] = {  # type: ignore[index]
            "certificate": str(tls.server_cert),
            "key": str(tls.server_key),
        }
    if auth is not None:
        config["auth"] = {
            "token": {
                "realm": auth.realm,
                "service": auth.service,
                "issuer": auth.issuer,
                "rootcertbundle": str(auth.cert_path),
            }
        }
    if redirect_baseurl is not None:
        config["middleware"] = {
            "storage": [{"name": "redirect", "options": {"baseurl": redirect_baseurl}}]
        }
    return config


def start_registry(
    workdir: Path,
    auth: TokenServer | None = None,
    redirect_baseurl: str | None = None,
    name: str = "registry",
    tls: TestCA | None = None,
) -> Registry:
    """Start docker-registry with storage under ``workdir``; the caller must ``stop()`` it.

    ``auth=None`` gives a plain registry without authentication. ``redirect_baseurl`` (scheme
    and host only; distribution 2.8 ignores a path) turns on the ``redirect`` middleware.
    ``tls`` serves HTTPS (the harness's own requests then cannot reach it: seed its storage).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    port = free_port()
    config_path = workdir / "config.yml"
    config_path.write_text(
        json.dumps(registry_config(storage, port, auth, redirect_baseurl, tls), indent=2)
    )
    proc = ManagedProcess(name, ["docker-registry", "serve", str(config_path)], workdir)
    # A port probe, not a request: the access log then starts with the tests' own requests.
    proc.start_listening(port)
    return Registry(port, storage, config_path, proc, auth, redirect_baseurl, tls)
