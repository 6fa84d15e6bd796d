"""C{/v2/auth} when clients log in to the proxy: its own token service.

Basic credentials are a user's password (htpasswd, bcrypt) or a static token under
any user name; none (or skopeo's empty C{Basic Og==}) is anonymous. Each failure
costs C{fail_delay} and counts toward the address's lockout (L{dockerproxy.logins}).
The token grants pulls only, of the repositories asked for that the client may pull
(see L{dockerproxy.clientauth}); push and every other action are never granted, and
what is not granted is simply left out, as registry token services do.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from twisted.web.server import Request

from dockerproxy import errors, names
from dockerproxy.auth import Scope, split_scopes
from dockerproxy.clientauth import ClientAuth, note_user
from dockerproxy.edge import client_request
from dockerproxy.exchange import request_host, request_ns
from dockerproxy.tokens import TokenEndpoint, respond_json

MAX_SCOPES = 100  # repository scopes looked at in one token request


class TokenServiceResource(TokenEndpoint):
    """C{/v2/auth}: logs a client in and signs its pull token."""

    def __init__(self, auth: ClientAuth) -> None:
        super().__init__()
        self.auth = auth

    async def token(self, request: Request) -> None:
        auth = self.auth
        auth.refuse_if_locked_out(request)
        user = await self.login(request)
        scopes = split_scopes(v.decode("utf-8", "replace") for v in request.args.get(b"scope", []))
        granted = self.grantable(request, user, scopes)
        if auth.signer is None:
            raise RuntimeError("the token signing key is not loaded")
        token = auth.signer.issue(user, granted)
        note_user(request, user)
        issued = datetime.fromtimestamp(auth.clock.seconds(), UTC)
        respond_json(
            request,
            {
                "token": token,
                "access_token": token,
                "expires_in": int(auth.signer.ttl),
                "issued_at": issued.isoformat().replace("+00:00", "Z"),
            },
        )

    async def login(self, request: Request) -> str | None:
        """The user the request's credentials log in as (None: anonymous), or a 401 after
        the failure's delay."""
        authorization = client_request(request).authorization
        if authorization is None:
            return None
        scheme, _, value = authorization.partition(b" ")
        scheme = scheme.lower()
        user: str | None = None
        if scheme == b"basic":
            credentials = parse_basic(value.strip())
            if credentials is not None:
                user = await self.auth.check_password(request, *credentials)
        elif scheme == b"bearer":
            user = self.auth.users.token_user(value.strip())
        if user is None:
            await self.auth.login_failed(request)
            request.refusal = "login"  # type: ignore[attr-defined]
            # The token endpoint itself takes Basic credentials, as token services say.
            request.setHeader(b"www-authenticate", b'Basic realm="dockerproxy"')
            raise errors.RegistryError(401, "UNAUTHORIZED", "invalid user name or password")
        return user

    def grantable(self, request: Request, user: str | None, scopes: list[str]) -> list[str]:
        """The repositories among C{scopes} whose pulls the client gets."""
        router, host, ns = self.auth.proxy.router, request_host(request), request_ns(request)
        granted = []
        for text in scopes[:MAX_SCOPES]:
            scope = Scope.parse(text)
            if scope is None or not scope.is_repository or not names.is_valid_name(scope.name):
                continue
            if "pull" not in scope.actions.split(","):
                continue
            if user is None:
                try:
                    target = router.resolve(host, scope.name, ns)
                except errors.RegistryError:
                    continue
                if not self.auth.may_pull(None, target):
                    continue
            granted.append(scope.name)
        return granted


def parse_basic(value: bytes) -> tuple[str, bytes] | None:
    """(user, password) of a Basic credential, or None when it is not one."""
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None
