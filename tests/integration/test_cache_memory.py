"""What clients that stall cost a caching proxy in memory, where it copies a blob's bytes.

A committed blob goes to a plain TCP client with sendfile(), so the proxy holds none
of its bytes; a TLS client gets the file read and written in chunks (the cache's
READ_CHUNK), and a client that stops reading holds the last of them in the proxy.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from tests.harness import largeblobs
from tests.harness.memory import (
    MiB,
    assert_given_back,
    read_and_hang_up,
    stall_clients,
    tls_listener,
)
from tests.harness.proxy import ProxyProcess
from tests.harness.upstream import Upstream

StartProxy = Callable[..., ProxyProcess]
CLIENTS = 100
BLOB = 64 * MiB
# 584-588 KiB measured with 512 KiB chunks, 323-327 KiB with 256 KiB (TLS included).
PER_CLIENT_LIMIT = 450 * 1024
RETURN_MARGIN = 10 * MiB


def test_stalled_tls_clients_of_a_cached_blob_hold_little_and_give_it_back(
    start_proxy: StartProxy, plain_upstream: Upstream, tmp: Path
) -> None:
    """100 TLS clients of a cached blob that read nothing or a trickle: each costs the
    proxy < 450 KiB while stalled, and RSS comes back once they hang up."""
    name = f"library/cached-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(plain_upstream.registry, name, BLOB, seed="cached")
    path = f"/v2/{name}/blobs/{blob.digest}"
    listener, tls = tls_listener(tmp / "certs")
    proxy = start_proxy("--upstream", plain_upstream.url, "--no-presets", **listener)
    # The client filling the cache gets the last byte only once the blob is committed.
    read_and_hang_up(proxy.port, path, BLOB, tls)
    stall = stall_clients(proxy, path, CLIENTS, tls)
    assert stall.per_client < PER_CLIENT_LIMIT, str(stall)
    assert_given_back(proxy, stall, RETURN_MARGIN)
