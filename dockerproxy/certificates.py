"""C{ssl:} listeners whose certificate a reload can replace.

Twisted's C{ssl:} endpoint string reads the key and certificate once, into a
context it keeps for the life of the port: a renewed certificate would need a
restart, and so would every pull under way. Here the same description is
parsed (L{parse_tls}) and the port is given a L{ServerCertificates}, which
makes each new connection from the context it holds now; L{ServerCertificates.reload}
reads the files again and swaps the context only if they load, so a bad
renewal is refused and the old certificate stays. Connections already open
keep the context they were made with.

Certificates after the first in C{certKey} (a Let's Encrypt C{fullchain.pem})
are sent as the chain, as with C{extraCertChain}; Twisted's own parser drops them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.python.filepath import FilePath
from zope.interface import implementer

PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
# The keyword options of Twisted's ssl: endpoint that this parser knows.
OPTIONS = frozenset(
    {"port", "interface", "backlog", "privateKey", "certKey", "extraCertChain", "dhParameters"}
)
# Ours: TLS over the socket systemd passes (socket activation), in place of the port.
SYSTEMD_OPTIONS = frozenset({"systemd", "domain"})


@dataclass(frozen=True)
class TLSListen:
    """An C{ssl:} endpoint description, parsed: where to listen and which files to read."""

    description: str
    port: int
    interface: str = ""
    backlog: int = 50
    private_key: str = "server.pem"
    cert_key: str | None = None  # None: the private key's file holds the certificate too
    extra_cert_chain: str | None = None
    dh_parameters: str | None = None
    systemd_index: int | None = None  # ssl:systemd=N: the Nth socket systemd passes
    domain: str = "INET"  # its address family, as Twisted's systemd: endpoint names it

    @property
    def certificate_file(self) -> str:
        return self.cert_key or self.private_key


def is_tls(description: str) -> bool:
    return description.split(":", 1)[0].lower() == "ssl"


def split_description(description: str) -> tuple[list[str], dict[str, str]]:
    """Positional and keyword parts of an endpoint string, as Twisted splits them:
    C{:} separates, the first C{=} of a part names it, a backslash escapes."""
    parts: list[list[str]] = [[""]]
    escaped = False
    for char in description:
        if escaped:
            parts[-1][-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append([""])
        elif char == "=" and len(parts[-1]) == 1:
            parts[-1].append("")
        else:
            parts[-1][-1] += char
    args = [part[0] for part in parts if len(part) == 1]
    kwargs = {part[0]: part[1] for part in parts if len(part) == 2}
    return args, kwargs


def parse_tls(description: str) -> TLSListen:
    """C{ssl:PORT[:interface=...][:backlog=N]:privateKey=...[:certKey=...]
    [:extraCertChain=...][:dhParameters=...]}, or C{ssl:systemd=N[:domain=INET6]:...} for
    the Nth socket systemd passes instead of a port; C{ValueError} for anything else."""
    args, kwargs = split_description(description)
    if "systemd" in kwargs:
        return _over_systemd(description, args, kwargs)
    if len(args) > 2 or (len(args) == 1 and "port" not in kwargs):
        raise ValueError("ssl: takes the port (or systemd=N), then name=value options")
    unknown = sorted(set(kwargs) - OPTIONS)
    if unknown:
        raise ValueError(f"ssl: unknown option {unknown[0]!r}")
    port = kwargs.get("port", args[1] if len(args) == 2 else "")
    backlog = kwargs.get("backlog", "50")
    if not port.isdigit() or not backlog.isdigit():
        raise ValueError("ssl: the port and backlog must be numbers")
    return _with_files(description, kwargs, int(port), kwargs.get("interface", ""), int(backlog))


def _over_systemd(description: str, args: list[str], kwargs: dict[str, str]) -> TLSListen:
    """C{ssl:systemd=N}: the socket is systemd's, so where it listens is not ours to say."""
    unknown = sorted(set(kwargs) - OPTIONS - SYSTEMD_OPTIONS)
    if len(args) > 1 or unknown or {"port", "interface", "backlog"} & set(kwargs):
        raise ValueError(
            "ssl:systemd=N takes no port, interface or backlog (the socket unit's), only "
            "domain= and the key and certificate options"
        )
    index, domain = kwargs["systemd"], kwargs.get("domain", "INET")
    if not index.isdigit() or domain not in ("INET", "INET6", "UNIX"):
        raise ValueError("ssl:systemd=N: N is a number, domain= INET, INET6 or UNIX")
    return _with_files(description, kwargs, systemd_index=int(index), domain=domain)


def _with_files(
    description: str,
    kwargs: dict[str, str],
    port: int = 0,
    interface: str = "",
    backlog: int = 50,
    systemd_index: int | None = None,
    domain: str = "INET",
) -> TLSListen:
    return TLSListen(
        description,
        port,
        interface,
        backlog,
        kwargs.get("privateKey", "server.pem"),
        kwargs.get("certKey"),
        kwargs.get("extraCertChain"),
        kwargs.get("dhParameters"),
        systemd_index,
        domain,
    )


def load_options(listen: TLSListen) -> ssl.CertificateOptions:
    """Read the key, certificate and chain files into server options whose context is
    built now, so a key that does not match its certificate fails here."""
    with open(listen.certificate_file, "rb") as f:
        certificates = PEM_CERTIFICATE.findall(f.read())
    with open(listen.private_key, "rb") as f:
        key = f.read()
    if not certificates:
        raise ValueError(f"no PEM certificate in {listen.certificate_file}")
    leaf = ssl.PrivateCertificate.loadPEM(certificates[0] + b"\n" + key)
    chain = [ssl.Certificate.loadPEM(pem).original for pem in certificates[1:]]
    if listen.extra_cert_chain is not None:
        with open(listen.extra_cert_chain, "rb") as f:
            extra = PEM_CERTIFICATE.findall(f.read())
        if not extra:
            raise ValueError(f"no PEM certificate in {listen.extra_cert_chain}")
        chain += [ssl.Certificate.loadPEM(pem).original for pem in extra]
    dh = None
    if listen.dh_parameters is not None:
        dh = ssl.DiffieHellmanParameters.fromFile(FilePath(listen.dh_parameters))
    options = ssl.CertificateOptions(
        privateKey=leaf.privateKey.original,
        certificate=leaf.original,
        extraCertChain=chain,
        dhParameters=dh,
    )
    options.getContext()  # reads the DH parameters, checks the key against the certificate
    return options


def fingerprint(options: ssl.CertificateOptions) -> str:
    """The served certificate's SHA-256 fingerprint, for the log."""
    certificate: Any = options.certificate
    return hashlib.sha256(ssl.Certificate(certificate).dump()).hexdigest()


@implementer(IOpenSSLServerConnectionCreator)
class ServerCertificates:
    """The TLS side of one C{ssl:} listener: each new connection gets the context of
    the certificate loaded last (see the module docstring)."""

    def __init__(self, listen: TLSListen) -> None:
        self.listen = listen
        self.options = load_options(listen)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.options.getContext(), None)

    def reload(self) -> tuple[str, str]:
        """Read the files again and serve them to new connections; if they do not
        load, the exception goes up and the certificate in use stays.

        Returns the old and new fingerprints."""
        options = load_options(self.listen)
        old, self.options = self.options, options
        return fingerprint(old), fingerprint(options)
