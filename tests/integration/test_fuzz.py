"""Thousands of malformed requests against a running proxy, as a scanner would send them.

Names, references, methods, headers, ``/v2/auth`` parameters and ``ns`` values are drawn from
a seeded generator, many of them naming sentinel listeners on loopback addresses the proxy must
never contact (as a host, a path prefix, an ``ns``, a scope, a realm). The proxy runs with
``--no-presets`` and the misbehaving registry as its only upstream. Afterwards: no sentinel saw
a connection, every path that reached the upstream is one the grammar allows, no response was
a 5xx of the proxy's own making, and its log holds no traceback.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.harness.misbehaving import BLOB_DIGEST, Misbehaving
from tests.harness.proxy import StartProxy
from tests.harness.rawserver import RawServer, sentinel

REQUESTS = 3000
SEED = 20261128
# What may reach the upstream: the ping, its token realm, and grammar-checked API paths
# (referrers with a media type as artifactType).
ALLOWED_UPSTREAM = re.compile(
    r"/v2/|/token-redirect(\?.*)?|/token(\?.*)?"
    r"|/v2/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"/(manifests/[A-Za-z0-9_.:=+-]+|blobs/[a-z0-9+._-]+:[A-Za-z0-9=_-]+|tags/list(\?.*)?"
    r"|referrers/[a-z0-9+._-]+:[A-Za-z0-9=_-]+(\?artifactType=[A-Za-z0-9%._+-]+)?)"
)


@pytest.fixture
def sentinels() -> Iterator[list[RawServer]]:
    with sentinel("127.0.0.1") as first, sentinel("127.0.0.7") as second:
        yield [first, second]


def requests(rng: random.Random, targets: list[str]) -> Iterator[bytes]:
    """Raw request heads a scanner might send, each on its own connection."""
    names = [
        "library/alpine",
        "a",
        "fault/ok",
        "UPPER/case",
        "a/../b",
        "%2e%2e/x",
        "a//b",
        "x" * 300,
        "évil",
        "a/b/c/d/e/f",
        "-dash",
        "a__b",
        "a..b",
        "",
        "_catalog",
        *(f"{t}/x" for t in targets),
        *(f"{t}/library/alpine" for t in targets),
    ]
    refs = [
        "latest",
        "3.20",
        BLOB_DIGEST,
        "sha256:abc",
        "sha512:" + "a" * 128,
        ".hidden",
        "../../etc/passwd",
        "a" * 200,
        "%00",
        "sha256:" + "A" * 64,
        "foo+bar:abc=",
        "x:y:z",
    ]
    kinds = ["manifests", "blobs", "tags/list", "blobs/uploads/", "referrers", ""]
    methods = [
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
        "TRACE",
        "CONNECT",
        "get",
        "G\x00T",
        "BREW",
        "GET /x",
    ]
    hosts = ["mirror.test", *targets, "evil.test", "a" * 300, "[::1]:1", "x y", ""]
    for _ in range(REQUESTS):
        method = rng.choice(methods) if rng.random() < 0.4 else rng.choice(["GET", "HEAD"])
        shape = rng.random()
        if shape < 0.5:
            path = f"/v2/{rng.choice(names)}/{rng.choice(kinds)}/{rng.choice(refs)}"
        elif shape < 0.7:
            scope = f"repository:{rng.choice(names)}:{rng.choice(['pull', 'push', '*', ''])}"
            path = (
                f"/v2/auth?scope={quote(scope)}&service={rng.choice(targets)}"
                f"&account={rng.choice(['x', '%00', 'a' * 100])}"
            )
        elif shape < 0.85:
            path = f"/v2/{rng.choice(names)}/manifests/latest?ns={quote(rng.choice(hosts))}"
        else:
            path = rng.choice(
                [
                    "/",
                    "/v2",
                    "/v2/",
                    "//v2//",
                    "/v2/_catalog",
                    "/%2e%2e/",
                    "http://" + rng.choice(targets) + "/v2/",
                    "*",
                    "/v2/?ns=" + rng.choice(targets),
                    "/v2/auth?ns=" + rng.choice(targets),
                    f"/v2/a/referrers/{BLOB_DIGEST}?artifactType="
                    + rng.choice(["a/b", "a%2Fb", "x", "a/b/c", "%00/x", "a" * 300 + "/b"]),
                    "/v1/search?q=" + rng.choice(["alpine", "", "%00", "a" * 300]),
                    "/v1/_ping",
                ]
            )
        headers = [f"Host: {rng.choice(hosts)}"]
        extra = ["Content-Length"] if rng.random() < 0.05 else []
        for name in (
            rng.sample(
                [
                    "Authorization",
                    "Range",
                    "Accept",
                    "If-None-Match",
                    "X-Forwarded-Host",
                    "Forwarded",
                ],
                2,
            )
            + extra
        ):
            value = rng.choice(
                [
                    "Bearer x",
                    "Basic Og==",
                    "bytes=5-1",
                    "bytes=0-",
                    "*/*",
                    "\x7f",
                    "a" * 2000,
                    f"http://{rng.choice(targets)}/",
                    "-1",
                    "99999999999999999999",
                    "for=127.0.0.7",
                ]
            )
            headers.append(f"{name}: {value}")
        yield (
            f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\nConnection: close\r\n\r\n"
        ).encode("latin-1", "replace")


def send(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            return b""
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_thousands_of_malformed_requests(
    start_proxy: StartProxy, misbehaving: Misbehaving, sentinels: list[RawServer], tmp: Path
) -> None:
    proxy = start_proxy(
        "--upstream",
        misbehaving.url,
        "--no-presets",
        "--cache-dir",
        str(tmp / "cache"),
        "--headers-timeout",
        "3",
        "--idle-timeout",
        "3",
    )
    before = len(misbehaving.seen())
    targets = [s.address for s in sentinels] + ["sentinel.test", "127.0.0.7"]
    own_failures, statuses = [], []
    for raw in requests(random.Random(SEED), targets):
        answer = send(proxy.port, raw)
        status_line = answer.split(b"\r\n", 1)[0]
        match = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
        status = int(match.group(1)) if match else 0
        statuses.append(status)
        if status >= 500 and misbehaving.url.encode() not in answer:
            own_failures.append((raw[:200], answer[:300]))
    assert own_failures == [], own_failures[:5]
    assert [s.connections for s in sentinels] == [0, 0], "the proxy connected to a sentinel"
    reached = [seen.path for seen in misbehaving.seen()[before:]]
    strays = [path for path in reached if not ALLOWED_UPSTREAM.fullmatch(path)]
    assert strays == [], strays[:10]
    log = proxy.log_text()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]
    assert sum(1 for s in statuses if 400 <= s < 500) > REQUESTS // 3, "inputs were refused"
    assert len(reached) > REQUESTS // 20, "and enough of them were valid to go upstream"
