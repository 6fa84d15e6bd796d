"""What a client's request says, read once, at the edge.

Every header and query parameter the proxy acts on is read here, once, into a
L{ClientRequest}; nothing further in does its own C{getHeader}. Two readers of
one header could disagree: with two C{Authorization} lines, the upstream was
sent the first while the cache's access records keyed on the last, so one
request could make a private repository public. Headers that must appear at
most once are therefore refused with a 400 when repeated, before anything is
fetched or recorded.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from dockerproxy import errors, names
from dockerproxy.auth import is_anonymous
from dockerproxy.networks import Networks, contains, parse_address

# Headers that RFC 9110 allows once: a second value is either an attack or a bug.
SINGLETONS = (
    b"authorization",
    b"host",
    b"range",
    b"if-range",
    b"if-modified-since",
    b"content-length",
    b"transfer-encoding",
)
# Query parameters that select something: a second value is ambiguous.
SINGLE_PARAMETERS = (b"ns", b"n", b"last", b"lang", b"service", b"artifactType", b"q", b"page")
_FOR_RE = re.compile(r'(?:^|[;,\s])for\s*=\s*("[^"]*"|[^;,\s]+)', re.IGNORECASE)
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")


@dataclass(frozen=True)
class ClientRequest:
    """The parts of a client's request the proxy uses, each read exactly once.

    C{authorization} is the one credential both sent upstream and keyed on by
    the cache's access records: C{None} when the client sent none or an anonymous
    one (C{Basic Og==}, the proxy's own anonymous token).
    """

    authorization: bytes | None = None
    host: str | None = None  # the Host header, lower case, when well formed
    accept: bytes | None = None  # every Accept line, merged
    accept_language: str = ""
    range: bytes | None = None
    if_range: bytes | None = None
    if_modified_since: bytes | None = None
    if_none_match: bytes | None = None
    ns: str | None = None  # containerd's ?ns=<registry>, validated
    # The client's IP address: the peer's, or the one a trusted proxy in front names.
    address: str = "-"
    # X-Request-Id from a trusted proxy when well formed, else one of the proxy's own.
    request_id: str = ""

    def forwarded(self) -> list[tuple[bytes, bytes]]:
        """The conditional and range headers passed on to the upstream as they came."""
        pairs = [
            (b"range", self.range),
            (b"if-none-match", self.if_none_match),
            (b"if-range", self.if_range),
            (b"if-modified-since", self.if_modified_since),
        ]
        return [(name, value) for name, value in pairs if value is not None]


def read_client_request(
    headers: Headers,
    args: dict[bytes, list[bytes]],
    peer: str = "-",
    trusted: Networks = (),
    new_id: Callable[[], str] = lambda: secrets.token_hex(8),
) -> ClientRequest:
    """Read the request once; a 400 L{errors.RegistryError} for repeated singletons.

    C{peer} is the address the connection came from; only when it is in C{trusted}
    (C{--trusted-proxy}) do C{Forwarded} / C{X-Forwarded-For} and C{X-Request-Id} count.
    """
    for name in SINGLETONS:
        if len(headers.getRawHeaders(name, ())) > 1:
            raise invalid_request(f"more than one {name.decode()} header")
    for name in SINGLE_PARAMETERS:
        if len(args.get(name, ())) > 1:
            raise invalid_request(f"more than one {name.decode()} parameter")
    authorization = _single(headers, b"authorization")
    if authorization is not None and is_anonymous(authorization):
        authorization = None
    return ClientRequest(
        authorization=authorization.strip() if authorization is not None else None,
        host=_host(_single(headers, b"host")),
        accept=_merged(headers, b"accept"),
        accept_language=(_merged(headers, b"accept-language") or b"").decode("latin-1"),
        range=_single(headers, b"range"),
        if_range=_single(headers, b"if-range"),
        if_modified_since=_single(headers, b"if-modified-since"),
        if_none_match=_merged(headers, b"if-none-match"),
        ns=_ns((args.get(b"ns") or [b""])[0]),
        address=client_address(headers, peer, trusted),
        request_id=_request_id(headers, contains(trusted, peer)) or new_id(),
    )


def client_address(headers: Headers, peer: str, trusted: Networks) -> str:
    """The client behind the chain of trusted proxies: walking the forwarded addresses
    from the nearest hop, the first one not itself a trusted proxy (RFC 7239 C{Forwarded}
    if sent, else C{X-Forwarded-For}); the peer when it is not trusted or names nobody."""
    address = peer
    if not contains(trusted, address):
        return address
    forwarded = _merged(headers, b"forwarded")
    if forwarded is not None:
        hops = [m.group(1) for m in _FOR_RE.finditer(forwarded.decode("latin-1"))]
    else:
        hops = (_merged(headers, b"x-forwarded-for") or b"").decode("latin-1").split(",")
    for hop in reversed(hops):
        parsed = parse_address(hop)
        if parsed is None:
            break  # an unusable hop: nothing before it can be trusted
        address = str(parsed)
        if not contains(trusted, address):
            break
    return address


def _request_id(headers: Headers, from_trusted_proxy: bool) -> str | None:
    value = _single(headers, b"x-request-id") if from_trusted_proxy else None
    text = value.decode("latin-1").strip() if value else ""
    return text if _REQUEST_ID_RE.fullmatch(text) else None


def invalid_request(message: str) -> errors.RegistryError:
    return errors.RegistryError(400, "INVALID_REQUEST", message)


def client_request(request: IRequest) -> ClientRequest:
    """The L{ClientRequest} the Site read for C{request} before any resource saw it."""
    value = getattr(request, "client_request", None)
    if not isinstance(value, ClientRequest):
        raise TypeError(f"{request!r} was not read by the proxy's Site")
    return value


def _single(headers: Headers, name: bytes) -> bytes | None:
    values = headers.getRawHeaders(name)
    return values[0] if values else None


def _merged(headers: Headers, name: bytes) -> bytes | None:
    """All lines of a list-valued header joined (dockerd sends six Accept lines)."""
    values = [v.strip() for raw in headers.getRawHeaders(name, ()) for v in raw.split(b",")]
    values = [v for v in values if v]
    return b", ".join(values) if values else None


def _host(raw: bytes | None) -> str | None:
    if not raw:
        return None
    host = raw.decode("latin-1").strip()
    return host.lower() if _HOST_RE.fullmatch(host) else None


def _ns(raw: bytes) -> str | None:
    if not raw:
        return None
    ns = raw.decode("ascii", "replace").lower()
    if not names.REGISTRY_NAME_RE.fullmatch(ns):
        raise errors.RegistryError(400, "NAME_INVALID", "invalid ns parameter", {"ns": ns})
    return ns
