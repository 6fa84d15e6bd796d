"""Small registries of the tests' own for the API Debian's docker-registry 2.8 lacks.

- L{ReferrersRegistry}: an OCI 1.1 registry with token auth, one subject image
  (C{sbom/app:v1}) and two artifacts referring to it (an SBOM and a signature), and
  C{/v2/<name>/referrers/<digest>} filtering by C{artifactType}.
- L{SearchIndex}: Docker Hub's C{/v1/search}, answering its JSON for any term.

Each is an C{http.server} on 127.0.0.1, on a thread of the test process, recording
every request; stop it with L{FixtureServer.stop} (the fixtures do).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.harness.ports import HOST

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
SBOM_TYPE = "application/spdx+json"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
REPOSITORY = "sbom/app"
TOKEN = "referrers-fixture-token"
SERVICE = "referrers.fixture.test"


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _manifest(artifact_type: str | None = None, subject: dict[str, Any] | None = None) -> bytes:
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": digest_of(b"{}"), "size": 2},
        "layers": [],
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if subject:
        document["subject"] = subject
    return json.dumps(document, sort_keys=True).encode()


SUBJECT = _manifest()
SUBJECT_DIGEST = digest_of(SUBJECT)
_SUBJECT_DESCRIPTOR = {"mediaType": MANIFEST_TYPE, "digest": SUBJECT_DIGEST, "size": len(SUBJECT)}
ARTIFACTS = {
    SBOM_TYPE: _manifest(SBOM_TYPE, _SUBJECT_DESCRIPTOR),
    SIGNATURE_TYPE: _manifest(SIGNATURE_TYPE, _SUBJECT_DESCRIPTOR),
}


def referrers_index(artifact_type: str | None = None) -> dict[str, Any]:
    """The referrers of L{SUBJECT}, of C{artifact_type} only when given."""
    return {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [
            {
                "mediaType": MANIFEST_TYPE,
                "digest": digest_of(body),
                "size": len(body),
                "artifactType": kind,
            }
            for kind, body in ARTIFACTS.items()
            if artifact_type in (None, kind)
        ],
    }


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


class FixtureServer:
    """A ThreadingHTTPServer on a free loopback port, serving on a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.seen: list[Seen] = []
        server = self

        class Bound(handler):  # type: ignore[valid-type,misc]
            fixture = server

        self.httpd = ThreadingHTTPServer((HOST, 0), Bound)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class _Handler(BaseHTTPRequestHandler):
    fixture: FixtureServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def record(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.fixture.seen.append(
            Seen(self.command, parts.path, query, self.headers.get("Authorization"))
        )
        return parts.path, query

    def answer(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status: int, code: str, **headers: str) -> None:
        body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
        self.answer(status, body, "application/json", **headers)


class _ReferrersHandler(_Handler):
    def do_GET(self) -> None:
        path, query = self.record()
        if path == "/token":
            self.answer(200, json.dumps({"token": TOKEN}).encode(), "application/json")
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"{self.fixture.url}/token"
            scope = "" if path == "/v2/" else f',scope="repository:{REPOSITORY}:pull"'
            challenge = f'Bearer realm="{realm}",service="{SERVICE}"{scope}'
            self.error(401, "UNAUTHORIZED", www_authenticate=challenge)
            return
        prefix = f"/v2/{REPOSITORY}/"
        if path == "/v2/":
            self.answer(200, b"{}", "application/json")
        elif path in (f"{prefix}manifests/v1", f"{prefix}manifests/{SUBJECT_DIGEST}"):
            self.answer(200, SUBJECT, MANIFEST_TYPE, docker_content_digest=SUBJECT_DIGEST)
        elif path == f"{prefix}referrers/{SUBJECT_DIGEST}":
            wanted = query.get("artifactType", [None])[0]
            body = json.dumps(referrers_index(wanted)).encode()
            filtered = {"oci_filters_applied": "artifactType"} if wanted else {}
            self.answer(200, body, INDEX_TYPE, **filtered)
        else:
            self.error(404, "MANIFEST_UNKNOWN")

    do_HEAD = do_GET


def search_answer(term: str, n: int) -> dict[str, Any]:
    """What Docker Hub's index answers: the term and up to C{n} results."""
    results = [
        {
            "name": f"{term}" if i == 0 else f"someone{i}/{term}",
            "description": f"fixture result {i} for {term}",
            "star_count": 1000 - i,
            "is_official": i == 0,
            "is_automated": False,
        }
        for i in range(min(n, 3))
    ]
    return {"num_results": len(results), "query": term, "page": 1, "results": results}


class _SearchHandler(_Handler):
    def do_GET(self) -> None:
        path, query = self.record()
        if path != "/v1/search" or not query.get("q"):
            self.error(404, "NOT_FOUND")
            return
        answer = search_answer(query["q"][0], int(query.get("n", ["25"])[0]))
        self.answer(200, json.dumps(answer).encode(), "application/json")


def start_referrers_registry() -> FixtureServer:
    return FixtureServer(_ReferrersHandler)


def start_search_index() -> FixtureServer:
    return FixtureServer(_SearchHandler)
