"""SIGHUP reloads a running proxy (``systemctl reload``) without dropping anything: a renewed
certificate is served to new TLS connections while a pull under way on the old one finishes
intact; a config that fails its checks, or a certificate that does not load, is refused in
one line and the proxy goes on with what it had; and the process stays alive (twistd's
default, before, was to die of the signal).

Real twistd processes, the session's token-auth docker-registry behind a gate that holds a
blob's body mid-way, test CAs (tests/harness/tls.py) and http.client clients over TLS.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import eventFromJSON, formatEvent

from tests.harness import largeblobs, web
from tests.harness.caching import MiB, anonymous_token
from tests.harness.gate import Gate
from tests.harness.polling import wait_until
from tests.harness.ports import HOST, free_port
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.tls import TestCA, make_ca
from tests.harness.upstream import Upstream

APPLIED = "reload: configuration applied"


def fingerprint_of_file(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def served_fingerprint(port: int) -> str:
    """The certificate a new TLS connection to ``port`` is shown (not verified here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        ssl.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def verifies_with(ca: TestCA, port: int) -> bool:
    """Whether a client trusting only ``ca`` accepts what ``port`` serves (name included)."""
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    try:
        with (
            ssl.create_connection((HOST, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=HOST),
        ):
            return True
    except ssl.SSLCertVerificationError:
        return False


def logged_since(proxy: ProxyProcess, since: int) -> str:
    """The whole lines the proxy logged since ``since`` (one being written is left for the
    next look), JSON lines formatted as text would have them."""
    text = proxy.proc.log_text(since)
    lines = text[: text.rfind("\n") + 1].splitlines()
    return "".join(
        (formatEvent(eventFromJSON(line)) if line.startswith("{") else line) + "\n"
        for line in lines
    )


def sighup(proxy: ProxyProcess, expect: str) -> str:
    """Send SIGHUP and wait for ``expect`` in what the proxy logs from then; that text."""
    mark = proxy.proc.log_size()
    os.kill(proxy.pid, signal.SIGHUP)
    heard = wait_until(lambda: expect in logged_since(proxy, mark), timeout=15)
    assert heard, proxy.proc.log_tail()
    assert proxy.proc.alive(), proxy.proc.log_tail()
    return logged_since(proxy, mark)


@dataclass
class TLSPull:
    """A blob GET over TLS on its own thread: the certificate it was shown, the body hashed."""

    port: int
    path: str
    token: str
    context: ssl.SSLContext
    status: int = 0
    length: int = 0
    digest: str = ""
    certificate: str = ""
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.first_mib = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        sha = hashlib.sha256()
        conn = http.client.HTTPSConnection(HOST, self.port, timeout=60, context=self.context)
        try:
            conn.connect()  # the handshake: the certificate is known before any request
            der = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
            self.certificate = hashlib.sha256(der).hexdigest()
            conn.request("GET", self.path, headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            self.status = response.status
            while chunk := response.read(MiB):
                sha.update(chunk)
                self.length += len(chunk)
                self.first_mib.set()
            announced = int(response.getheader("content-length") or -1)
            if announced != self.length:
                self.error = http.client.IncompleteRead(b"", announced - self.length)
        except Exception as e:  # kept for the test to show, whatever it is
            self.error = e
        finally:
            conn.close()
            self.first_mib.set()
            self.digest = "sha256:" + sha.hexdigest()


class TLSProxy:
    """A proxy on an ``ssl:`` listener (key and certificate at fixed paths, as certbot's
    live/ names are) and a plain one, with a --config file a test rewrites."""

    def __init__(self, start_proxy: StartProxy, upstream_url: str, tmp: Path) -> None:
        self.ca = make_ca(tmp / "ca-1")
        self.key, self.cert = tmp / "live" / "privkey.pem", tmp / "live" / "fullchain.pem"
        self.install(self.ca)
        self.config = tmp / "config.toml"
        self.config.write_text('log_format = "text"\n')
        self.tls_port, self.plain_port = free_port(), free_port()
        self.proxy = start_proxy(
            "--config",
            str(self.config),
            "--listen",
            f"tcp:{self.plain_port}:interface={HOST}",
            "--upstream",
            upstream_url,
            "--no-presets",
            "--no-cache",
            port=self.tls_port,
            listen=(
                f"ssl:{self.tls_port}:interface={HOST}:privateKey={self.key}:certKey={self.cert}"
            ),
            scheme="https",
        )
        self.plain_url = f"http://{HOST}:{self.plain_port}"
        assert wait_until(lambda: web.request("GET", f"{self.plain_url}/").status == 200)

    def install(self, ca: TestCA) -> None:
        """Put ``ca``'s server key and certificate where the listener reads them."""
        self.key.parent.mkdir(exist_ok=True)
        shutil.copy(ca.server_key, self.key)
        shutil.copy(ca.server_cert, self.cert)


def test_a_renewed_certificate_is_served_to_new_connections_and_a_pull_under_way_finishes(
    start_proxy: StartProxy, upstream: Upstream, gate_factory: Callable[[int, int], Gate], tmp: Path
) -> None:
    name = f"public/reload-{uuid.uuid4().hex[:8]}"
    blob = largeblobs.put_large_blob(upstream.registry, name, 32 * MiB, seed="reload")
    gate = gate_factory(upstream.port, 8 * MiB)  # the pull stops part way until released
    served = TLSProxy(start_proxy, gate.url, tmp)
    old = fingerprint_of_file(served.cert)
    assert served_fingerprint(served.tls_port) == old
    token = anonymous_token(ProxyProcess(served.proxy.proc, served.plain_port, "http"), name)
    pull = TLSPull(
        served.tls_port,
        f"/v2/{name}/blobs/{blob.digest}",
        token,
        ssl.create_default_context(cafile=str(served.ca.ca_cert)),
    )
    try:
        assert pull.first_mib.wait(30) and pull.error is None, (pull, served.proxy.proc.log_tail())
        assert gate.wait_holding(30), "the upstream body never reached the gate"

        renewed = make_ca(tmp / "ca-2")
        served.install(renewed)
        new = fingerprint_of_file(served.cert)
        assert served_fingerprint(served.tls_port) == old, "read again only on a reload"
        said = sighup(served.proxy, APPLIED)
        assert f"serves a new certificate to new connections (sha256 {new})" in said

        assert served_fingerprint(served.tls_port) == new
        assert verifies_with(renewed, served.tls_port)
        assert not verifies_with(served.ca, served.tls_port)
        assert pull.thread.is_alive() and pull.length < blob.size, (pull, "not under way")
    finally:
        gate.release()
    pull.thread.join(60)
    assert not pull.thread.is_alive(), served.proxy.proc.log_tail()
    assert (pull.status, pull.length, pull.digest, pull.error) == (
        200,
        blob.size,
        blob.digest,
        None,
    )
    assert pull.certificate == old, "the open connection kept the certificate it began with"
    assert served.proxy.proc.alive()
    assert "Traceback" not in served.proxy.log_text()


def test_a_renewal_that_does_not_load_is_refused_and_the_old_certificate_stays(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    served = TLSProxy(start_proxy, upstream.url, tmp)
    old = fingerprint_of_file(served.cert)
    other = make_ca(tmp / "other")
    shutil.copy(other.server_key, served.key)  # a key that is not the certificate's
    said = sighup(served.proxy, APPLIED)
    refusals = [line for line in said.splitlines() if "refused" in line]
    assert len(refusals) == 1, said
    assert f"reload: the certificate of ssl:{served.tls_port}" in refusals[0]
    assert "the old one stays: Certificate public and private keys do not match." in said
    assert served_fingerprint(served.tls_port) == old
    assert verifies_with(served.ca, served.tls_port)
    assert "Traceback" not in served.proxy.log_text()


def access_events(proxy: ProxyProcess, since: int) -> list[dict[str, object]]:
    """The access-log events logged as JSON since ``since`` (whole lines only)."""
    text = proxy.proc.log_text(since)
    return [
        event
        for line in text[: text.rfind("\n") + 1].splitlines()
        if line.startswith("{")
        for event in [eventFromJSON(line)]
        if event.get("log_namespace") == "dockerproxy.access"
    ]


def test_the_config_file_reloads_and_an_invalid_one_is_refused(
    start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    config = tmp / "config.toml"
    config.write_text('log_format = "text"\n')
    proxy = start_proxy("--config", str(config), "--upstream", upstream.url, "--no-presets")
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    top, access = 'log_format = "json"\n', '[access]\ntrusted_proxies = ["127.0.0.1/32"]\n'
    wanted = top + access

    config.write_text(wanted + '[limits]\nmax_connections = "lots"\n')
    said = sighup(proxy, "reload refused")
    [line] = [line for line in said.splitlines() if "reload" in line]
    assert line.endswith(
        "reload refused, the running configuration stays: limits.max_connections: "
        "must be a whole number from 1 to 1000000, got 'lots'"
    ), line
    mark = proxy.proc.log_size()
    assert web.request("GET", f"{proxy.url}/v2/", forwarded).status == 401
    assert wait_until(lambda: " GET /v2/ 401 " in proxy.proc.log_text(mark))
    assert "] 127.0.0.1 - GET /v2/ 401 " in proxy.proc.log_text(mark), "text, peer untrusted"

    config.write_text(wanted)
    sighup(proxy, APPLIED)
    mark = proxy.proc.log_size()
    assert web.request("GET", f"{proxy.url}/v2/", forwarded).status == 401
    assert wait_until(lambda: access_events(proxy, mark)), proxy.proc.log_tail()
    [event] = access_events(proxy, mark)
    assert (event["path"], event["client"]) == ("/v2/", "203.0.113.9"), "JSON, peer trusted"

    config.write_text(top + 'listen = ["tcp:1"]\n' + access)
    said = sighup(proxy, APPLIED)
    assert "need a restart" not in said, "--listen on the command line wins over the file's"
    config.write_text(wanted + "[timeouts]\nconnect = 3\n")
    said = sighup(proxy, APPLIED)
    assert "need a restart keep their running values: timeouts\n" in said
    assert proxy.proc.alive()
    assert "Traceback" not in proxy.log_text()
