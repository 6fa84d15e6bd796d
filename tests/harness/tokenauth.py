"""The token server from the tests' side: a signing key and certificate made for each run
(never committed), the server (tests/harness/tokenserver.py) started as a process of its own,
and ``TokenServer``, the handle the fixtures pass around.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess, start_harness_server


def generate_signing_material(directory: Path, kind: str = "rsa") -> tuple[Path, Path]:
    """Write a fresh signing key and its self-signed certificate; return (key, cert) paths.

    The certificate is the registry's ``rootcertbundle``; ``kind`` is "rsa" (RS256) or "ec"
    (ES256).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockerproxy test token issuer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path = directory / "token-signing-key.pem"
    cert_path = directory / "token-signing-cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@dataclass
class TokenServer:
    """A running token server process, as the fixtures hand it out.

    ``realm`` is what the registry's ``auth.token.realm`` points to; ``requests()`` parses the
    per-request JSON log lines.
    """

    port: int
    service: str
    issuer: str
    key_path: Path
    cert_path: Path
    policy_path: Path
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def set_policy(self, policy: dict[str, Any]) -> None:
        """Replace the policy (see tests.harness.tokenserver): the next token request uses it."""
        staged = self.policy_path.with_suffix(".new")
        staged.write_text(json.dumps(policy, indent=2))
        os.replace(staged, self.policy_path)

    def log_mark(self) -> int:
        """A position in the log; pass it to ``requests(since=...)`` to see only later lines."""
        return int(self.process.log_size())

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Logged requests (dicts with method, path, authorization, user, scopes, granted...)."""
        return [record for record in self.process.json_lines(since) if "method" in record]

    def fetch_token(
        self,
        scopes: list[str],
        creds: tuple[str, str] | None = None,
        service: str | None = None,
    ) -> str:
        """Get a token directly (e.g. to call the upstream registry without a client)."""
        query = urllib.parse.urlencode(
            [("service", service or self.service)] + [("scope", s) for s in scopes]
        )
        req = urllib.request.Request(f"{self.realm}?{query}")
        if creds is not None:
            raw = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {raw}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(json.load(resp)["token"])

    def make_private(self, pattern: str) -> None:
        """From now on no anonymous rule covers names matching ``pattern``: the repository
        went private."""
        policy = json.loads(self.policy_path.read_text())
        self.set_policy({**policy, "private": [*policy.get("private", []), pattern]})

    def stop(self) -> None:
        self.process.stop()


def start_tokenserver(
    workdir: Path,
    policy: dict[str, Any],
    service: str = "registry.test",
    issuer: str = "harness-token-issuer",
    key_kind: str = "rsa",
    header: str = "kid",
    expires_in: int = 300,
) -> TokenServer:
    """Generate keys, write the policy and start the server; the caller must ``stop()`` it."""
    workdir.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = generate_signing_material(workdir / "keys", key_kind)
    policy_path = workdir / "policy.json"
    policy_path.write_text(json.dumps(policy, indent=2))
    port = free_port()
    args = [
        "--port", str(port), "--key", str(key_path), "--cert", str(cert_path),
        "--issuer", issuer, "--service", service, "--users", str(policy_path),
        "--expires-in", str(expires_in), "--header", header,
    ]  # fmt: skip
    proc = start_harness_server("tokenserver", "tests.harness.tokenserver", args, workdir, port)
    return TokenServer(port, service, issuer, key_path, cert_path, policy_path, proc)
