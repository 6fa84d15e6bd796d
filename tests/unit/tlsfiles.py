"""Certificate files for the TLS listener tests, and a handshake in memory.

L{issue} writes a key and a certificate for C{127.0.0.1} signed by a throwaway CA
(optionally through an intermediate, written after the leaf as in a Let's Encrypt
C{fullchain.pem}); L{served_chain} shakes hands with a server connection over
memory BIOs and returns the fingerprints of the certificates the server sent.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL


@dataclass(frozen=True)
class Issued:
    key: Path
    cert: Path  # the leaf, then any intermediate
    fingerprint: str  # the leaf's sha256, hex
    chain: tuple[str, ...]  # fingerprints of every certificate in C{cert}, in order


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def issue(directory: Path, name: str, intermediate: bool = False) -> Issued:
    """Write C{NAME.key} and C{NAME.crt} into C{directory}."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer, signer = _name(f"{name} test CA"), ca_key
    chain: list[x509.Certificate] = []
    if intermediate:
        middle_key = ec.generate_private_key(ec.SECP256R1())
        chain.append(_certificate(f"{name} intermediate", middle_key, issuer, ca_key, ca=True))
        issuer, signer = _name(f"{name} intermediate"), middle_key
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("127.0.0.1", key, issuer, signer, ca=False)
    certificates = [leaf, *chain]
    paths = Issued(
        directory / f"{name}.key",
        directory / f"{name}.crt",
        _fingerprint(leaf),
        tuple(_fingerprint(c) for c in certificates),
    )
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths.cert.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    )
    return paths


def served_chain(server: SSL.Connection) -> list[str]:
    """Handshake with C{server} (a connection over memory BIOs, not yet in a state);
    the fingerprints of the certificates it sent, leaf first."""
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(20):
        for one, other in ((client, server), (server, client)):
            try:
                one.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                other.bio_write(one.bio_read(65536))
            except SSL.WantReadError:
                pass
    chain = client.get_peer_cert_chain(as_cryptography=True)
    assert chain, "the handshake did not complete"
    return [_fingerprint(c) for c in chain]
