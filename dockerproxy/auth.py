"""Authentication challenges and token scopes.

The proxy never holds client tokens: it rewrites the upstream's C{WWW-Authenticate}
challenge so clients ask the proxy's own C{/v2/auth}, which forwards the token
request to the upstream's realm with the scopes mapped to upstream names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(rf"\s*,*\s*({_TOKEN})")
_PARAM_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TOKEN}))\s*")
_TOKEN68_RE = re.compile(r"\s*([A-Za-z0-9\-._~+/]+=*)\s*(?:,|$)")


@dataclass(frozen=True)
class Challenge:
    """One C{WWW-Authenticate} challenge: a lower-case scheme and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")


def parse_www_authenticate(values: Iterable[str]) -> list[Challenge]:
    """Parse every challenge in the given header values (RFC 7235), in any parameter order.

    Malformed trailing text ends parsing; what was understood so far is returned.
    """
    challenges: list[Challenge] = []
    for value in values:
        challenges.extend(_parse_one_header(value))
    return challenges


def _parse_one_header(value: str) -> list[Challenge]:
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(value):
        scheme_match = _SCHEME_RE.match(value, pos)
        if scheme_match is None:
            break
        scheme = scheme_match.group(1).lower()
        pos = scheme_match.end()
        params: dict[str, str] = {}
        if _PARAM_RE.match(value, pos) is None:
            token68 = _TOKEN68_RE.match(value, pos)
            if token68 is not None:
                pos = token68.end()
        while True:
            param = _PARAM_RE.match(value, pos)
            if param is None:
                break
            name, quoted, bare = param.groups()
            params[name.lower()] = _unquote(quoted) if quoted is not None else bare
            pos = param.end()
            if pos < len(value) and value[pos] == ",":
                pos += 1
                continue
            break
        challenges.append(Challenge(scheme, params))
        pos = _skip_to_next_scheme(value, pos)
    return challenges


def _skip_to_next_scheme(value: str, pos: int) -> int:
    while pos < len(value) and value[pos] in " ,":
        pos += 1
    return pos


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_bearer(
    realm: str, service: str | None, scope: str | None = None, error: str | None = None
) -> str:
    """A C{Bearer} challenge with the parameters clients read, in the usual order."""
    parts = [f"realm={_quote(realm)}"]
    if service is not None:
        parts.append(f"service={_quote(service)}")
    if scope is not None:
        parts.append(f"scope={_quote(scope)}")
    if error is not None:
        parts.append(f"error={_quote(error)}")
    return "Bearer " + ",".join(parts)


@dataclass(frozen=True)
class Scope:
    """A token scope such as C{repository:library/alpine:pull}."""

    type: str
    name: str
    actions: str

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """Split C{type:name:actions}; the name may itself contain a colon (a port)."""
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep and sep2 and kind and name):
            return None
        return cls(kind, name, actions)

    @property
    def is_repository(self) -> bool:
        """C{repository} or C{repository(plugin)}: a scope naming a repository."""
        return self.type.split("(")[0] == "repository"

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{self.actions}"


def split_scopes(values: Iterable[str]) -> list[str]:
    """Every scope from repeated C{scope} parameters, each possibly space-separated."""
    return [scope for value in values for scope in value.split()]


def rewrite_scopes(scopes: Iterable[str], to_upstream: Callable[[str], str]) -> list[str]:
    """Map each repository scope's client name to the upstream's name; keep others as they are."""
    rewritten = []
    for text in scopes:
        scope = Scope.parse(text)
        if scope is not None and scope.is_repository:
            text = str(Scope(scope.type, to_upstream(scope.name), scope.actions))
        rewritten.append(text)
    return rewritten


# The service named by challenges the proxy makes itself (no upstream in sight), and the
# audience of the tokens it signs when clients log in to it.
PROXY_SERVICE = "dockerproxy"

# The token the proxy hands out for upstreams that need none; never sent upstream.
ANONYMOUS_TOKEN = "dockerproxy-anonymous"


def is_anonymous(authorization: bytes | None) -> bool:
    """No credentials, C{Basic Og==} (an empty user and password, as skopeo sends),
    or the proxy's own L{ANONYMOUS_TOKEN}."""
    if not authorization:
        return True
    scheme, _, value = authorization.strip().partition(b" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == b"bearer":
        return value == ANONYMOUS_TOKEN.encode()
    return scheme == b"basic" and value in (b"", b"Og==")
