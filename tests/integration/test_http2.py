"""HTTP/2 on an ssl: listener with --http2: curl and skopeo negotiate h2 by ALPN, and a
client resetting its stream mid-blob makes the proxy give up the upstream fetch."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events

from tests.harness import largeblobs
from tests.harness.caching import no_images
from tests.harness.gate import Gate
from tests.harness.ports import HOST, free_port
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.pulls import assert_same_image
from tests.harness.skopeo import skopeo
from tests.harness.tls import TestCA, make_ca
from tests.harness.upstream import Upstream, UpstreamFactory

MiB = 1024 * 1024


def tls_proxy(start_proxy: StartProxy, upstream_url: str, ca: TestCA, *args: str) -> ProxyProcess:
    port = free_port()
    listen = f"ssl:{port}:interface={HOST}:privateKey={ca.server_key}:certKey={ca.server_cert}"
    return start_proxy(
        "--upstream",
        upstream_url,
        "--library-prefix",
        "--log-format",
        "json",
        *args,
        port=port,
        listen=listen,
        scheme="https",
    )


def curl_version(ca: TestCA, url: str, *options: str) -> tuple[str, bytes]:
    """The HTTP version curl used (as -w '%{http_version}' says) and the body."""
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(ca.ca_cert),
            *options,
            "-o",
            "-",
            "-w",
            "\n%{http_version}",
            url,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    body, _, version = result.stdout.rpartition(b"\n")
    return version.decode(), body


def test_curl_negotiates_h2_for_the_ping_and_a_blob(
    start_proxy: StartProxy, plain_upstream: Upstream, tmp: Path
) -> None:
    ca = make_ca(tmp / "certs")
    proxy = tls_proxy(start_proxy, plain_upstream.url, ca, "--http2")
    plain = plain_upstream.images["plain"]
    layer = plain.layers[0]
    version, _ = curl_version(ca, f"{proxy.url}/v2/", "--http2")
    assert version == "2"
    version, body = curl_version(ca, f"{proxy.url}/v2/plain/blobs/{layer.digest}", "--http2")
    assert version == "2"
    assert "sha256:" + hashlib.sha256(body).hexdigest() == layer.digest
    assert [e["protocol"] for e in proxy.access_events()] == ["HTTP/2", "HTTP/2"]


def test_without_http2_the_tls_listener_speaks_http1_only(
    start_proxy: StartProxy, plain_upstream: Upstream, tmp: Path
) -> None:
    ca = make_ca(tmp / "certs")
    proxy = tls_proxy(start_proxy, plain_upstream.url, ca)
    version, _ = curl_version(ca, f"{proxy.url}/v2/", "--http2")
    assert version == "1.1"


def test_curl_fetches_the_blobs_of_a_multi_layer_image_as_parallel_h2_streams(
    start_proxy: StartProxy, plain_upstream: Upstream, tmp: Path
) -> None:
    ca = make_ca(tmp / "certs")
    proxy = tls_proxy(start_proxy, plain_upstream.url, ca, "--http2")
    plain = plain_upstream.images["plain"]
    digests = [plain.config.digest, *plain.layer_digests]
    assert len(plain.layers) > 1
    command = ["curl", "-sS", "--cacert", str(ca.ca_cert), "--http2", "--parallel"]
    command += ["-w", "%{http_version} %{http_code}\n"]
    for i, digest in enumerate(digests):
        command += ["-o", str(tmp / f"blob{i}"), f"{proxy.url}/v2/plain/blobs/{digest}"]
    result = subprocess.run(command, capture_output=True, timeout=60, check=True, text=True)
    assert sorted(result.stdout.split("\n")[:-1]) == ["2 200"] * len(digests)
    for i, digest in enumerate(digests):
        assert "sha256:" + hashlib.sha256((tmp / f"blob{i}").read_bytes()).hexdigest() == digest
    assert [e["protocol"] for e in proxy.access_events()] == ["HTTP/2"] * len(digests)


def test_skopeo_pulls_a_multi_layer_image_through_an_h2_listener(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    """skopeo 1.9 offers no ALPN at all (containers/image gives Go's transport a TLS
    config of its own, which turns Go's automatic HTTP/2 off): it pulls over HTTP/1.1
    from a listener that offers h2."""
    ca = make_ca(tmp / "certs")
    proxy = tls_proxy(start_proxy, upstream.url, ca, "--http2")
    alpine = upstream.images["alpine"]
    assert len(alpine.layers) > 1
    cert_dir = tmp / "client-certs"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_bytes(ca.ca_cert.read_bytes())
    skopeo(
        "copy",
        f"--src-cert-dir={cert_dir}",
        f"docker://{proxy.host}/alpine:3.20",
        f"oci:{tmp / 'out'}:x",
    )
    assert_same_image(tmp / "out", alpine)
    blobs = [e for e in proxy.access_events() if e["route"] == "blob"]
    assert len(blobs) == len(alpine.layers) + 1  # and the config
    assert {e["protocol"] for e in proxy.access_events()} == {"HTTP/1.1"}


def test_a_stream_reset_mid_blob_aborts_the_upstream_fetch(
    start_proxy: StartProxy,
    make_upstream: UpstreamFactory,
    gate_factory: Callable[[int, int], Gate],
    tmp: Path,
) -> None:
    """The upstream body stops after 8 MiB (tests.harness.gate), so it cannot end before the
    test releases it; the client reads 1 MiB of it over h2, then resets its stream (its
    connection stays open): the proxy closes its upstream connection."""
    up = make_upstream(auth=False, seed=no_images)
    name = f"public/reset-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(up.registry, name, 64 * MiB, seed="reset")
    gate = gate_factory(up.port, 8 * MiB)
    ca = make_ca(tmp / "certs")
    proxy = tls_proxy(start_proxy, gate.url, ca, "--http2", "--no-cache")

    def upstream_let_go() -> None:  # while the client's connection is still open
        assert gate.wait_client_left(20), "the proxy kept the upstream fetch after the reset"

    try:
        received = fetch_then_reset(
            proxy, ca, f"/v2/{name}/blobs/{blob.digest}", MiB, upstream_let_go
        )
        assert received >= MiB
    finally:
        gate.release()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not proxy.access_events():
        time.sleep(0.05)
    [event] = proxy.access_events()
    assert (event["protocol"], event["complete"]) == ("HTTP/2", False)


def fetch_then_reset(
    proxy: ProxyProcess, ca: TestCA, path: str, least: int, then: Callable[[], None]
) -> int:
    """GET C{path} over h2 (the h2 package over a TLS socket), read at least C{least} body
    bytes, reset the stream and call C{then} before closing the connection; the bytes
    received."""
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((HOST, proxy.port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        stream = client.get_next_available_stream_id()
        client.send_headers(
            stream,
            [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", proxy.host)],
            end_stream=True,
        )
        tls.sendall(client.data_to_send())
        received = 0
        while received < least:
            data = tls.recv(65536)
            assert data, "the proxy closed the connection"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    assert dict(event.headers)[b":status"] == b"200", event.headers
                elif isinstance(event, h2.events.DataReceived):
                    received += len(event.data)
                    client.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    raise AssertionError(f"the stream ended first: {event}")
            tls.sendall(client.data_to_send())
        client.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        tls.sendall(client.data_to_send())
        then()
        return received
