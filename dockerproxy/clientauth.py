"""Clients log in to the proxy: it is its own token service (C{--auth-htpasswd},
C{--auth-tokens}), as distribution is with token auth.

1. A request without a valid credential gets a 401 whose Bearer challenge names the
   proxy's C{/v2/auth}, the service C{dockerproxy} and the repository's pull scope.
2. C{/v2/auth} (L{dockerproxy.tokenservice}) checks Basic credentials and signs a
   short-lived token granting pulls of the repositories asked for: every one to a
   user, those matching C{--anonymous-pull} to a client without credentials.
3. Every request then carries that token (or a static token as a bearer token) and
   is checked here: signature, expiry, audience and issuer, and that it covers the
   repository by the name the client used. An anonymous token's repository is
   matched against C{--anonymous-pull} again, and a user must still exist, so a
   reload that removes either takes effect at once.

A token that does not cover the repository gets a 401 with C{error="insufficient_scope"}
and the scope, as distribution answers: the client then asks for a token with that
scope, which a user gets and an anonymous client does not. (403 C{DENIED} is left to
the allow and deny lists.) Once a request passes, its client's credential is gone from
it: the upstream sees the proxy (L{dockerproxy.upstreamauth}), and the cache's access
records key on the proxy's own identity.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from dockerproxy import errors
from dockerproxy.auth import PROXY_SERVICE, format_bearer
from dockerproxy.config import AuthSettings, Config
from dockerproxy.edge import client_request
from dockerproxy.exchange import Proxy, base_url
from dockerproxy.logins import LoginGuard
from dockerproxy.patterns import any_matches
from dockerproxy.proxytokens import Grant, InvalidToken, TokenSigner, looks_like_jwt
from dockerproxy.routing import Target
from dockerproxy.users import TooManyChecks, UserStore

log = Logger()

# The proxy's own identity for its [[warm]] refresh (L{dockerproxy.warmservice}): no
# user or token can have it, since their names have no colon.
WARM_USER = "dockerproxy:warm"


class ClientAuth:
    """Who may pull what through the proxy, and the tokens that say so.

    Built for every proxy (its L{UserStore} also serves the admin listener); the
    resources consult it only when C{enabled}, which is fixed at start. L{apply}
    takes a reloaded config's users, tokens, patterns and timings.
    """

    def __init__(
        self, settings: AuthSettings, proxy: Proxy, users: UserStore, clock: IReactorTime
    ) -> None:
        self.proxy = proxy
        self.users = users
        self.clock = clock
        self.enabled = settings.enabled
        self.guard = LoginGuard(clock, settings.fail_delay)
        self.anonymous = settings.anonymous_pull
        self.ttl = settings.token_ttl
        self.signer: TokenSigner | None = None  # once the key is loaded (SigningKeyService)

    def __repr__(self) -> str:
        return f"<ClientAuth enabled={self.enabled} users={self.users!r}>"

    def use_key(self, key: bytes) -> None:
        self.signer = TokenSigner(key, self.clock, self.ttl)

    def apply(self, config: Config) -> None:
        """Take a reloaded config's users, tokens, C{anonymous_pull}, C{fail_delay} and
        C{token_ttl}. Turning logins on or off needs a restart: such a config changes
        nothing here (and says so)."""
        settings = config.auth
        if settings.enabled != self.enabled:
            log.warn(
                "auth: turning client logins {what} takes a restart; kept as they were",
                what="on" if settings.enabled else "off",
            )
            return
        self.users.apply(config)
        self.anonymous = settings.anonymous_pull
        self.guard.fail_delay = settings.fail_delay
        self.ttl = settings.token_ttl
        if self.signer is not None:
            self.signer.ttl = settings.token_ttl

    async def check_password(self, request: IRequest, user: str, password: bytes) -> str | None:
        """Who logs in with C{user} and C{password} (L{UserStore.check_password}); a 429
        while too many checks wait already."""
        try:
            return await self.users.check_password(user, password)
        except TooManyChecks:
            request.setHeader(b"retry-after", b"1")
            request.refusal = "busy"  # type: ignore[attr-defined]
            raise errors.RegistryError(
                429, "TOOMANYREQUESTS", "too many logins at once: retry in a second"
            ) from None

    async def check_admin(self, address: str, user: str, password: str) -> bool:
        """For the admin listener: whether C{user} / C{password} is in C{[auth] admins}.
        A failure costs the login delay and counts towards the address's lockout, and a
        locked-out address is refused whatever it sends."""
        if self.guard.locked_for(address) is not None:
            return False
        try:
            if await self.users.check_admin(user, password):
                return True
        except TooManyChecks:
            log.info("auth: admin login from {client} refused: too many at once", client=address)
            return False
        log.info("auth: failed admin login from {client}", client=address)
        await self.guard.failed(address)
        return False

    def warm_token(self, repository: str) -> str | None:
        """A token the proxy signs for its own warm refresh to pull C{repository} (None
        until the signing key is loaded)."""
        if self.signer is None:
            return None
        return self.signer.issue(WARM_USER, [repository])

    # -- the registry API -------------------------------------------------------------------

    async def ping(self, request: Request) -> None:
        """C{/v2/}: 200 for any valid credential (an anonymous token's too), else the
        challenge. Answered here: the upstream has nothing to say about the proxy's users."""
        grant = await self.credential(request, scope=None)
        self.passed(request, grant)
        body = b"{}"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"docker-distribution-api-version", b"registry/2.0")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    async def authorize(self, request: Request, name: str, target: Target) -> None:
        """Let a request for repository C{name} (routed to C{target}) through, or raise the
        401 (or 429) its client gets."""
        scope = f"repository:{name}:pull"
        grant = await self.credential(request, scope)
        if not grant.covers(name) or not self.may_pull(grant.user, target):
            raise self.challenge(request, scope, "insufficient_scope")
        self.passed(request, grant)

    def may_pull(self, user: str | None, target: Target) -> bool:
        """Users may pull anything; anonymous clients what C{--anonymous-pull} matches."""
        if user is not None:
            return True
        return any_matches(self.anonymous, target.upstream.name, target.repository)

    def identify(self, request: Request) -> None:
        """Name the request's user from a valid bearer credential before its client's
        limits are counted (L{dockerproxy.policy}); anything else is left to L{authorize}."""
        token = _bearer(request)
        user: str | None = None
        if token and looks_like_jwt(token):
            if self.signer is None:
                return
            try:
                user = self.signer.verify(token).user
            except InvalidToken:
                return
        elif token:
            user = self.users.token_user(token.encode("latin-1"))
        if user is not None and (user == WARM_USER or self.users.knows(user)):
            note_user(request, user)

    async def credential(self, request: Request, scope: str | None) -> Grant:
        """What the request's bearer token grants: the proxy's token or a static one."""
        token = _bearer(request)
        if not token:
            raise self.challenge(request, scope)
        if looks_like_jwt(token):
            if self.signer is None:
                raise RuntimeError("the token signing key is not loaded")
            try:
                grant = self.signer.verify(token)
            except InvalidToken as e:
                log.info(
                    "auth: refused a token from {client}: {why}",
                    client=_address(request),
                    why=str(e),
                )
                raise self.challenge(request, scope, "invalid_token") from None
        else:
            # Not one the proxy signed: a static token, or a guess at one.
            self.refuse_if_locked_out(request)
            name = self.users.token_user(token.encode("latin-1"))
            if name is None:
                await self.login_failed(request)
                raise self.challenge(request, scope, "invalid_token", refusal="login")
            grant = Grant(name, None)
        if grant.user not in (None, WARM_USER) and not self.users.knows(grant.user or ""):
            raise self.challenge(request, scope, "invalid_token")
        return grant

    def passed(self, request: Request, grant: Grant) -> None:
        """The request goes on as the proxy: its user noted, its credential gone."""
        note_user(request, grant.user)
        read = client_request(request)
        if read.authorization is not None:
            request.client_request = replace(read, authorization=None)  # type: ignore[attr-defined]

    # -- refusals ---------------------------------------------------------------------------

    def challenge(
        self,
        request: Request,
        scope: str | None,
        error: str | None = None,
        refusal: str = "auth",
    ) -> errors.RegistryError:
        """A 401 pointing the client at the proxy's C{/v2/auth} (with C{ns}, which
        containerd keeps in the realm, so the token request routes as this one did)."""
        ns = client_request(request).ns
        realm = f"{base_url(self.proxy, request)}/v2/auth" + (
            f"?{urlencode({'ns': ns})}" if ns else ""
        )
        value = format_bearer(realm, PROXY_SERVICE, scope, error)
        request.setHeader(b"www-authenticate", value.encode("latin-1"))
        request.refusal = refusal  # type: ignore[attr-defined]
        message = "authentication required"
        if error == "insufficient_scope":
            message = "not allowed to pull this repository"
        elif error == "invalid_token":
            message = "invalid or expired token: log in again"
        return errors.RegistryError(401, "UNAUTHORIZED", message)

    def refuse_if_locked_out(self, request: IRequest) -> None:
        """A 429 for a client address locked out after failed logins: it may not try any
        credential, right or wrong, until the lockout ends."""
        left = self.guard.locked_for(_address(request))
        if left is None:
            return
        seconds = max(1, round(left))
        request.setHeader(b"retry-after", b"%d" % seconds)
        request.refusal = "lockout"  # type: ignore[attr-defined]
        raise errors.RegistryError(
            429,
            "TOOMANYREQUESTS",
            f"too many failed logins from this address: try again in {seconds} s",
        )

    async def login_failed(self, request: IRequest) -> None:
        """Count the failure against the client's address and make it wait."""
        address = _address(request)
        log.info("auth: failed login from {client}", client=address)
        await self.guard.failed(address)


def note_user(request: Request, user: str | None) -> None:
    """The proxy's own user on the request (L{dockerproxy.site.ProxyRequest.user}), for
    the access log, the limits and metrics (twisted.web's bytes C{user} is unused)."""
    request.user = user  # type: ignore[assignment]


def _bearer(request: Request) -> str:
    """The request's bearer token, as read at the edge; empty if it has none."""
    scheme, _, value = (client_request(request).authorization or b"").partition(b" ")
    return value.strip().decode("latin-1") if scheme.lower() == b"bearer" else ""


def _address(request: IRequest) -> str:
    return client_request(request).address
