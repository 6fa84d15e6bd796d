"""A Docker-style token server (the ``realm`` of registry token auth), run as its own process.

    python -m tests.harness.tokenserver --port P --key key.pem --cert cert.pem \
        --issuer ISSUER --service SERVICE --users policy.json [--expires-in 300] [--header kid]

``GET /token?service=S&scope=repository:NAME:pull&scope=...`` answers like Docker Hub's
auth.docker.io: a real JWT (RS256 for an RSA key, ES256 for a P-256 key) that docker-registry
verifies against ``--cert`` (its ``rootcertbundle``). Scopes the caller may not have are left out
of ``access`` rather than refused, so anonymous callers always get a token and the registry
answers 401 later, as Docker Hub does. Wrong Basic credentials get 401 with a JSON error.
``Authorization: Basic Og==`` (empty user and password, what skopeo sends) counts as anonymous.
``POST /token`` supports the OAuth2 password grant that containerd tries first.

The policy file (``--users``) is JSON::

    {"anonymous": {"pull": ["library/*", "public/*"]},
     "users": {"pusher": {"password": "p", "pull": ["*"], "push": ["*"], "admin": true},
               "reader": {"password": "r", "pull": ["private/*"]}}}

Patterns are ``fnmatch`` patterns on repository names; anonymous rules apply to every caller;
``admin`` also grants non-repository scopes such as ``registry:catalog:*``. An optional
``"private": [patterns]`` takes names out of the anonymous rules (a repository that went
private). The file is read again whenever it changes, so a test can change the policy of a
running server (``TokenServer.make_private``).

Every request is logged to stdout as one JSON line (method, path with query, whether an
Authorization header came and which user it named, scopes asked for and granted, status) so
tests can check what a client or the proxy asked for. The tests' side (signing material,
starting it, ``TokenServer``) is tests/harness/tokenauth.py.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import fnmatch
import hashlib
import json
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# -- the JWT header -----------------------------------------------------------------------------


def libtrust_key_id(public_key: Any) -> str:
    """The libtrust key ID docker-registry matches a JWT ``kid`` header against.

    SHA-256 of the DER SubjectPublicKeyInfo, first 30 bytes, base32 without padding, in 12
    colon-separated groups of 4 characters.
    """
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


# -- policy -------------------------------------------------------------------------------------


@dataclass
class Scope:
    """One requested ``type:name:actions`` scope (the name may itself contain colons)."""

    type: str
    name: str
    actions: list[str]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """Parse a scope string; None when it is malformed (it is then just ignored)."""
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not kind or not name:
            return None
        return cls(kind, name, [a for a in actions.split(",") if a])

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def split_scopes(values: list[str]) -> list[Scope]:
    """Scopes from repeated ``scope`` parameters, each possibly space-separated."""
    scopes = []
    for value in values:
        for part in value.split():
            scope = Scope.parse(part)
            if scope is not None:
                scopes.append(scope)
    return scopes


@dataclass
class Policy:
    """Who may do what: anonymous rules plus per-user passwords and rules."""

    anonymous: dict[str, list[str]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    private: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Policy:
        data = json.loads(Path(path).read_text())
        return cls(
            anonymous=data.get("anonymous", {}),
            users=data.get("users", {}),
            private=data.get("private", []),
        )

    def check_password(self, user: str, password: str) -> bool:
        entry = self.users.get(user)
        return entry is not None and str(entry.get("password")) == password

    def granted(self, user: str | None, scope: Scope) -> list[str]:
        """The subset of ``scope.actions`` that ``user`` (None = anonymous) may have."""
        private = any(fnmatch.fnmatchcase(scope.name, p) for p in self.private)
        rules: list[dict[str, Any]] = [] if private else [self.anonymous]
        if user is not None:
            rules.append(self.users.get(user, {}))
        if scope.type != "repository":
            admin = any(r.get("admin") for r in rules)
            return list(scope.actions) if admin else []
        allowed = []
        for action in scope.actions:
            for rule in rules:
                patterns = list(rule.get(action, [])) + list(rule.get("*", []))
                if any(fnmatch.fnmatchcase(scope.name, p) for p in patterns):
                    allowed.append(action)
                    break
        return allowed


# -- the HTTP server ----------------------------------------------------------------------------


class AuthError(Exception):
    """Bad credentials: answered with 401 and a JSON error body."""


@dataclass
class Config:
    """Server settings shared by all handler threads."""

    issuer: str
    service: str
    policy_path: Path
    key: Any
    cert_der: bytes
    algorithm: str
    header_mode: str
    expires_in: int
    log_lock: threading.Lock = field(default_factory=threading.Lock)
    policy_lock: threading.Lock = field(default_factory=threading.Lock)
    _loaded: tuple[tuple[int, int], Policy] | None = None

    @property
    def policy(self) -> Policy:
        """The policy file as it is now: read again when it changed (its modification time
        or, replaced by a rename, its inode)."""
        with self.policy_lock:
            stat = self.policy_path.stat()
            stamp = (stat.st_mtime_ns, stat.st_ino)
            if self._loaded is None or self._loaded[0] != stamp:
                self._loaded = (stamp, Policy.load(self.policy_path))
            return self._loaded[1]


class TokenHandler(BaseHTTPRequestHandler):
    """Handles /token; everything else is 404."""

    server_version = "harness-tokenserver/1"
    protocol_version = "HTTP/1.1"
    config: Config  # set on the subclass built in serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib access log; ``_log`` writes one JSON line per request instead."""

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        self._token_request(parts.path, query, basic=self._basic_credentials())

    def do_POST(self) -> None:
        """OAuth2 (``grant_type=password``) as containerd tries it before falling back to GET."""
        parts = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        form = urllib.parse.parse_qs(body, keep_blank_values=True)
        grant = (form.get("grant_type") or [""])[0]
        if grant != "password":
            self._log(None, [], [], 400, grant=grant)
            self._json(400, {"error": "unsupported_grant_type", "grant_type": grant})
            return
        creds = ((form.get("username") or [""])[0], (form.get("password") or [""])[0])
        self._token_request(parts.path, form, basic=creds, oauth=True)

    def _basic_credentials(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization")
        if not header:
            return None
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ("\0invalid", "")
        return (user, password)

    def _token_request(
        self,
        path: str,
        params: dict[str, list[str]],
        basic: tuple[str, str] | None,
        oauth: bool = False,
    ) -> None:
        cfg = self.config
        scopes = split_scopes(params.get("scope", []))
        if path.rstrip("/") != "/token":
            self._log(None, scopes, [], 404)
            self._json(404, {"errors": [{"code": "NOT_FOUND", "message": path}]})
            return
        service = (params.get("service") or [None])[0]
        if service is not None and service != cfg.service:
            self._log(None, scopes, [], 400, service=service)
            self._json(400, {"errors": [{"code": "DENIED", "message": "invalid service"}]})
            return
        try:
            user = self._authenticate(basic)
        except AuthError as exc:
            self._log(basic[0] if basic else None, scopes, [], 401)
            self._json(
                401,
                {
                    "details": str(exc),
                    "errors": [{"code": "UNAUTHORIZED", "message": str(exc)}],
                },
            )
            return
        access = self._access(user, scopes)
        token, issued = self._sign(user, access)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": cfg.expires_in,
            "issued_at": issued,
        }
        if oauth:
            body["scope"] = " ".join(str(s) for s in scopes)
        self._log(user, scopes, access, 200)
        self._json(200, body)

    def _authenticate(self, basic: tuple[str, str] | None) -> str | None:
        """The user named by valid credentials, None for anonymous; AuthError when wrong."""
        if basic is None or basic == ("", ""):
            return None
        user, password = basic
        if not self.config.policy.check_password(user, password):
            raise AuthError("incorrect username or password")
        return user

    def _access(self, user: str | None, scopes: list[Scope]) -> list[dict[str, Any]]:
        merged: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            actions = merged.setdefault((scope.type, scope.name), [])
            for action in self.config.policy.granted(user, scope):
                if action not in actions:
                    actions.append(action)
        return [
            {"type": kind, "name": name, "actions": actions}
            for (kind, name), actions in merged.items()
            if actions
        ]

    def _sign(self, user: str | None, access: list[dict[str, Any]]) -> tuple[str, str]:
        import jwt

        cfg = self.config
        now = int(time.time())
        claims = {
            "iss": cfg.issuer,
            "sub": user or "",
            "aud": cfg.service,
            "exp": now + cfg.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if cfg.header_mode in ("kid", "both"):
            headers["kid"] = libtrust_key_id(cfg.key.public_key())
        if cfg.header_mode in ("x5c", "both"):
            headers["x5c"] = [base64.b64encode(cfg.cert_der).decode()]
        token = jwt.encode(claims, cfg.key, algorithm=cfg.algorithm, headers=headers)
        issued = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return token, issued

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _log(
        self,
        user: str | None,
        scopes: list[Scope],
        access: list[dict[str, Any]],
        status: int,
        **extra: Any,
    ) -> None:
        header = self.headers.get("Authorization")
        record = {
            "ts": time.time(),
            "method": self.command,
            "path": self.path,
            "authorization": header is not None,
            "auth_type": header.partition(" ")[0].lower() if header else None,
            "user": user,
            "scopes": [str(s) for s in scopes],
            "granted": [f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access],
            "status": status,
            "user_agent": self.headers.get("User-Agent"),
            **extra,
        }
        with self.config.log_lock:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()


def load_config(args: argparse.Namespace) -> Config:
    """Read the key, certificate and policy named on the command line."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = serialization.load_pem_private_key(Path(args.key).read_bytes(), password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = "ES256"
    else:
        raise SystemExit(f"unsupported key type {type(key).__name__}")
    cert = x509.load_pem_x509_certificate(Path(args.cert).read_bytes())
    return Config(
        issuer=args.issuer,
        service=args.service,
        policy_path=Path(args.users),
        key=key,
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        algorithm=algorithm,
        header_mode=args.header,
        expires_in=args.expires_in,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--users", required=True, help="policy JSON (see module docstring)")
    parser.add_argument("--expires-in", type=int, default=300)
    parser.add_argument("--header", choices=["kid", "x5c", "both"], default="kid")
    args = parser.parse_args(argv)
    handler = type("Handler", (TokenHandler,), {"config": load_config(args)})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    sys.stdout.write(json.dumps({"listening": f"http://{args.host}:{args.port}"}) + "\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
