"""A registry as a proxy looks to a pulling client, in memory, for L{dockerproxy.warming}.

L{FakeRegistry} is a twisted.web resource behind treq's StubTreq: manifests and blobs
answered only with a token from its C{/v2/auth} (the challenge names that realm),
every request remembered, blob answers held back on demand (to count how many are
under way at once).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from treq.testing import StubTreq
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

HOST = "proxy.test"
BASE = f"http://{HOST}"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class FakeRegistry(Resource):
    """Serves C{manifests} ((name, reference) -> (media type, bytes)) and C{blobs}."""

    isLeaf = True

    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    basic: str | None = None  # the Basic credential /v2/auth requires, if any
    hold_blobs: bool = False
    stall_blobs: bool = False  # send a blob's first byte, then nothing
    held: list[tuple[Request, bytes]] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)  # blob digests answered with other bytes
    token_padding: int = 0  # bytes of whitespace after a token answer's JSON

    def __post_init__(self) -> None:
        Resource.__init__(self)

    def __hash__(self) -> int:
        return id(self)

    def stub(self) -> StubTreq:
        return StubTreq(self)

    # -- content ---------------------------------------------------------------------------

    def image(self, name: str, tag: str | None, layers: list[bytes], arch: str = "amd64") -> str:
        """Store an image (its config names C{arch}); the manifest's digest."""
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        self.blobs[digest(config)] = config
        for layer in layers:
            self.blobs[digest(layer)] = layer
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"digest": digest(config), "size": len(config)},
                "layers": [{"digest": digest(x), "size": len(x)} for x in layers],
            }
        ).encode()
        self.manifests[(name, digest(manifest))] = (OCI_MANIFEST, manifest)
        if tag is not None:
            self.manifests[(name, tag)] = (OCI_MANIFEST, manifest)
        return digest(manifest)

    def index(self, name: str, tag: str, platforms: dict[str, str]) -> str:
        """Store an index of C{platforms} (arch -> manifest digest); its digest."""
        entries = [
            {
                "mediaType": OCI_MANIFEST,
                "digest": d,
                "size": len(self.manifests[(name, d)][1]),
                "platform": {"os": "linux", "architecture": arch},
            }
            for arch, d in platforms.items()
        ]
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        self.manifests[(name, tag)] = (OCI_INDEX, index.encode())
        return digest(index.encode())

    # -- requests --------------------------------------------------------------------------

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def render_GET(self, request: Request) -> Any:
        path = request.path.decode()
        authorization = request.getHeader("authorization")
        self.seen.append(Seen("GET", request.uri.decode(), authorization))
        if path == "/v2/auth":
            return self._token(request, authorization)
        if not (authorization or "").startswith("Bearer token-"):
            return self._challenge(request, path)
        name, kind, reference = _api_path(path)
        if kind == "manifests" and (name, reference) in self.manifests:
            media_type, body = self.manifests[(name, reference)]
            request.setHeader(b"content-type", media_type.encode())
            request.setHeader(b"docker-content-digest", digest(body).encode())
            return body
        if kind == "blobs" and reference in self.blobs:
            body = self.blobs[reference]
            if reference in self.corrupt:
                body = body[::-1] + b"x"
            if self.hold_blobs or self.stall_blobs:
                if self.stall_blobs:
                    request.setHeader(b"content-length", b"%d" % len(body))
                    request.write(body[:1])
                    body = body[1:]
                self.held.append((request, body))
                return NOT_DONE_YET
            return body
        request.setResponseCode(404)
        code = "MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN"
        return json.dumps({"errors": [{"code": code, "message": f"{kind} unknown"}]}).encode()

    def release(self, count: int | None = None) -> None:
        """Answer the held blob requests (the first C{count}, or all)."""
        chosen, self.held = self.held[:count], self.held[len(self.held[:count]) :]
        for request, body in chosen:
            request.write(body)
            request.finish()

    def _challenge(self, request: Request, path: str) -> bytes:
        name = _api_path(path)[0]
        request.setResponseCode(401)
        request.setHeader(
            b"www-authenticate",
            f'Bearer realm="{BASE}/v2/auth",service="dockerproxy",'
            f'scope="repository:{name}:pull"'.encode(),
        )
        return b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'

    def _token(self, request: Request, authorization: str | None) -> bytes:
        if self.basic is not None and authorization != self.basic:
            request.setResponseCode(401)
            return b'{"errors":[{"code":"UNAUTHORIZED","message":"bad login"}]}'
        scope = request.args.get(b"scope", [b""])[0].decode()
        return json.dumps({"token": f"token-{scope}"}).encode() + b" " * self.token_padding


def _api_path(path: str) -> tuple[str, str, str]:
    """(name, manifests|blobs, reference) of C{/v2/NAME/KIND/REF}."""
    head, reference = path.rsplit("/", 1)
    name, kind = head.removeprefix("/v2/").rsplit("/", 1)
    return name, kind, reference
