"""The mirror over a whole Site, driven with raw HTTP bytes (L{tests.unit.proxysite}), with the
cache on a real temporary directory and the fake upstream of proxysite."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.web.server import Request

from dockerproxy.config import CacheConfig, Config
from tests.unit.fakes import scratch_dir
from tests.unit.proxysite import HUB_HOST, MANIFEST, ProxyTestCase, make_parts, reply

INDEX = "application/vnd.oci.image.index.v1+json"
SINGLE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_SINGLE = "application/vnd.docker.distribution.manifest.v2+json"
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
OTHER = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","x":1}'
OTHER_DIGEST = "sha256:" + hashlib.sha256(OTHER).hexdigest()
TAG_PATH = "/v2/library/busybox/manifests/latest"
TTL = 300.0
STALE = 3600.0

BLOB = bytes(range(256)) * 64  # 16 KiB
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
CLIENT_PATH = f"/v2/busybox/blobs/{BLOB_DIGEST}"
UPSTREAM_PATH = f"/v2/library/busybox/blobs/{BLOB_DIGEST}"
HALF = len(BLOB) // 2


class MirrorTestCase(ProxyTestCase):
    def use(self, config: Config, http: Any = None) -> None:
        cache = CacheConfig(directory=str(scratch_dir(self)), tag_ttl=TTL, stale_max_age=STALE)
        self.proxy, self.mirror, self.site = make_parts(
            replace(config, cache=cache), self.clock, http or self.stub
        )

    def setUp(self) -> None:
        super().setUp()
        self.serve_tag(MANIFEST, DIGEST)

    def serve_tag(self, body: bytes, digest: str, code: int = 200, path: str = TAG_PATH) -> None:
        def handle(request: Request) -> bytes:
            request.setResponseCode(code)
            if code != 200:
                return b'{"errors":[{"code":"UNAVAILABLE","message":"down"}]}'
            request.setHeader(b"content-type", INDEX.encode())
            request.setHeader(b"docker-content-digest", digest.encode())
            request.setHeader(b"content-length", b"%d" % len(body))
            return b"" if request.method == b"HEAD" else body

        self.upstream.on(HUB_HOST, path, handle)

    def pull(
        self,
        method: str = "GET",
        accept: str = INDEX,
        path: str = TAG_PATH,
        auth: str | None = None,
    ) -> Any:
        headers = [("Accept", accept)]
        if auth is not None:
            headers.append(("Authorization", auth))
        return self.fetch(method, path.replace("/library/busybox/", "/busybox/"), headers)

    def upstream_calls(self) -> list[tuple[str, str]]:
        return [(s.method, s.path) for s in self.upstream.seen if s.host == HUB_HOST]


class BlobTestCase(MirrorTestCase):
    """Requests for one blob, L{BLOB}, which C{serve_blob} makes the upstream answer."""

    def serve_blob(self, body: bytes = BLOB, **headers: str) -> None:
        self.upstream.on(HUB_HOST, UPSTREAM_PATH, reply(200, body, **headers))

    def get(
        self, auth: str | None = None, method: str = "GET", full: bool = False
    ) -> StringTransport:
        """Send a blob request without pumping the upstream's answers; C{full}: the client's
        socket buffer is full from the start."""
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        if full:
            transport.producer.pauseProducing()  # the channel, as a full socket pauses it
        lines = [f"{method} {CLIENT_PATH} HTTP/1.1", "Host: mirror.test"]
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        return transport

    def blob_requests(self) -> list[Any]:
        return [s for s in self.upstream.requests_to(HUB_HOST) if s.path == UPSTREAM_PATH]


def ranged(body: bytes) -> Any:
    """An upstream blob handler that honours one C{bytes=first-[last]} Range."""

    def handle(request: Request) -> bytes:
        value = request.getHeader(b"range")
        if value is None:
            request.setHeader(b"content-length", b"%d" % len(body))
            return body
        first_text, _, last_text = value.decode().removeprefix("bytes=").partition("-")
        first = int(first_text)
        last = int(last_text) if last_text else len(body) - 1
        request.setResponseCode(206)
        request.setHeader(b"content-range", b"bytes %d-%d/%d" % (first, last, len(body)))
        return body[first : last + 1]

    return handle
