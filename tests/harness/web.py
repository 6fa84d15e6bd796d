"""A minimal synchronous HTTP client for tests (http.client, no redirects followed).

urllib follows redirects and raises on 4xx; registry tests need to see 307s and 401s as they
are, and to hash gigabyte bodies without holding them in memory.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CHUNK = 1 << 20
USER_AGENT = "dockerproxy-harness"  # tells harness requests apart in server logs


@dataclass
class Response:
    """Status, headers and body (or, with ``digest_body``, only its sha256 and length)."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes = b""
    length: int = 0
    digest: str = ""
    all_headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        text = self.body[:500].decode("utf-8", "replace")
        return f"HTTP {self.status} {self.reason} headers={self.all_headers} body={text!r}"


def request(
    method: str,
    url: str,
    headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    timeout: float = 60.0,
    digest_body: bool = False,
) -> Response:
    """Send one request and return the response without following redirects.

    ``headers`` may be a list of pairs to send a header several times (e.g. Accept).
    ``digest_body`` streams the body into sha256 instead of keeping it (for large blobs).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are used in tests: {url}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        if not any(name.lower() == "user-agent" for name, _ in pairs):
            pairs.append(("User-Agent", USER_AGENT))
        for name, value in pairs:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        result = Response(resp.status, resp.reason, resp.headers, all_headers=resp.getheaders())
        if digest_body:
            sha = hashlib.sha256()
            while chunk := resp.read(CHUNK):
                sha.update(chunk)
                result.length += len(chunk)
            result.digest = "sha256:" + sha.hexdigest()
        else:
            result.body = resp.read()
            result.length = len(result.body)
            result.digest = "sha256:" + hashlib.sha256(result.body).hexdigest()
        return result
    finally:
        conn.close()
