"""The proxy's own pull tokens: short-lived JWTs it signs for its users and checks on
every request, with a key generated once in the state directory.

HS256 (HMAC-SHA256): the proxy is both the issuer and the only verifier, so a shared
secret is all it needs; the algorithm is pinned, so a token naming another (C{none},
an RSA one) is refused whatever it says. Expiry is checked against the proxy's clock
(the injected reactor), not PyJWT's C{time.time()}, so tests can move time.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jwt
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime

from dockerproxy.auth import PROXY_SERVICE

ALGORITHM = "HS256"
ISSUER = "dockerproxy"
KEY_FILE = "token-signing.key"
KEY_BYTES = 32
_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "access")


class InvalidToken(Exception):
    """A bearer token the proxy did not issue, or no longer honours (the reason is for
    logs and the challenge's C{error_description}; it never quotes the token)."""


@dataclass(frozen=True)
class Grant:
    """What a valid credential allows: pulls of C{repositories} (as the client names
    them; C{None}: every repository, for a static token) as C{user} (C{None}: anonymous)."""

    user: str | None
    repositories: frozenset[str] | None

    def covers(self, repository: str) -> bool:
        return self.repositories is None or repository in self.repositories


class TokenSigner:
    """Issues and verifies the proxy's tokens with C{key}, valid for C{ttl} seconds."""

    def __init__(self, key: bytes, clock: IReactorTime, ttl: float = 300.0) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"a signing key needs at least {KEY_BYTES} bytes")
        self._key = key
        self.clock = clock
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"<TokenSigner ttl={self.ttl:g}>"  # never the key

    def issue(self, user: str | None, repositories: Iterable[str]) -> str:
        """A token for C{user} to pull C{repositories}, in the registry token format
        (an C{access} list of repository entries, C{pull} only)."""
        now = int(self.clock.seconds())
        claims = {
            "iss": ISSUER,
            "aud": PROXY_SERVICE,
            "sub": user or "",
            "iat": now,
            "nbf": now,
            "exp": now + int(self.ttl),
            "jti": secrets.token_urlsafe(12),
            "access": [
                {"type": "repository", "name": name, "actions": ["pull"]}
                for name in sorted(set(repositories))
            ],
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str) -> Grant:
        """The grant C{token} carries, or L{InvalidToken}: a bad signature (tampered, or
        signed with another key), another algorithm, audience or issuer, expired."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=PROXY_SERVICE,
                issuer=ISSUER,
                options={
                    "require": list(_CLAIMS),
                    "verify_exp": False,  # checked below, against the proxy's clock
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as e:
            raise InvalidToken(type(e).__name__) from None
        expires = claims["exp"]
        if not isinstance(expires, int | float) or expires <= self.clock.seconds():
            raise InvalidToken("expired")
        return Grant(claims["sub"] or None, _repositories(claims["access"]))


def _repositories(access: object) -> frozenset[str]:
    if not isinstance(access, list):
        raise InvalidToken("malformed access")
    names = set()
    for entry in access:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidToken("malformed access")
        if entry.get("type") == "repository" and "pull" in (entry.get("actions") or ()):
            names.add(entry["name"])
    return frozenset(names)


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts: what a static token from C{token new} never is."""
    return token.count(".") == 2


class KeyFileError(Exception):
    """The signing key cannot be read or made (a one-line reason naming the file)."""


def load_or_create_key(state_dir: str) -> bytes:
    """The key in C{state_dir}, made once (random, hex, mode 0600, the directory 0700);
    a key file others may read is refused rather than trusted."""
    path = os.path.join(state_dir, KEY_FILE)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _read_key(path)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return _read_key(path)
    except OSError as e:
        raise KeyFileError(f"cannot keep the token signing key {path}: {e.strerror}") from None


def _read_key(path: str) -> bytes:
    with open(path, encoding="ascii", errors="replace") as f:
        mode = os.fstat(f.fileno()).st_mode
        text = f.read().strip()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} may be read by others: chmod 600 it")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise KeyFileError(f"{path} is not a key (64 hex digits); delete it to make a new one")
    return key


class SigningKeyService(Service):
    """Loads (or makes, the first time) the signing key as the proxy starts: nothing
    touches the disk while the service tree is built. A key it cannot keep stops the
    proxy with one line and exit status 2, like a bad option."""

    name = "signing-key"

    def __init__(self, state_dir: str, use_key: Callable[[bytes], None]) -> None:
        self.state_dir = state_dir
        self.use_key = use_key

    def startService(self) -> None:
        super().startService()
        try:
            key = load_or_create_key(self.state_dir)
        except KeyFileError as e:
            # twistd has sent sys.stderr to the log by now: the line goes to the terminal.
            (sys.__stderr__ or sys.stderr).write(f"dockerproxy: --state-dir: {e}\n")
            raise SystemExit(2) from None
        self.use_key(key)
