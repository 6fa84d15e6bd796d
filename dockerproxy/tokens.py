"""C{/v2/auth}: the token endpoint the rewritten challenges send clients to.

It asks the upstream's token realm on the client's behalf, with the upstream's
C{service}, the scopes mapped to upstream names and the client's own Basic
credentials (or the proxy's, for a client that sends none).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from dockerproxy import errors, names
from dockerproxy.auth import (
    ANONYMOUS_TOKEN,
    Scope,
    rewrite_scopes,
    split_scopes,
)
from dockerproxy.config import UpstreamConfig
from dockerproxy.edge import client_request
from dockerproxy.exchange import (
    Proxy,
    basic_authorization,
    request_host,
    request_ns,
)
from dockerproxy.headers import USER_AGENT
from dockerproxy.mirror import Mirror
from dockerproxy.policy import check_repository
from dockerproxy.rendering import PullResource, error_page, render_async, respond_error

log = Logger()


ANONYMOUS_TOKEN_RESPONSE = {
    "token": ANONYMOUS_TOKEN,
    "access_token": ANONYMOUS_TOKEN,
    "expires_in": 3600,
}


_TOKEN_PASSTHROUGH = ("account", "client_id", "offline_token")


class TokenEndpoint(PullResource):
    """C{/v2/auth}'s methods: tokens by GET (L{token}); a POST (an OAuth2 password grant,
    which containerd tries first) gets a 404 that sends the client back to GET."""

    isLeaf = True
    methods = (b"GET", b"HEAD", b"POST")

    def render_GET(self, request: Request) -> int:
        return render_async(request, lambda: self.token(request))

    def render_POST(self, request: Request) -> bytes:
        return error_page(
            request, errors.RegistryError(404, "UNSUPPORTED", "use GET for tokens from this proxy")
        )

    async def token(self, request: Request) -> None:
        raise NotImplementedError


class AuthResource(TokenEndpoint):
    """C{/v2/auth}: the token endpoint clients are sent to by the rewritten challenge."""

    def __init__(self, proxy: Proxy, mirror: Mirror | None = None) -> None:
        super().__init__()
        self.proxy = proxy
        self.mirror = mirror

    async def token(self, request: Request) -> None:
        scopes = split_scopes(v.decode("utf-8", "replace") for v in request.args.get(b"scope", []))
        upstream, to_upstream = self.token_upstream(request, scopes)
        request.upstream = upstream.url  # type: ignore[attr-defined]
        try:
            await self.relay_token(request, upstream, scopes, to_upstream)
        except errors.RegistryError as e:
            if e.status not in (502, 504) or not self.offline_token(request, upstream, e.message):
                raise

    def offline_token(self, request: Request, upstream: UpstreamConfig, why: str) -> bool:
        """The upstream's token service is unreachable: with a cache, a client that sent no
        credentials gets the proxy's anonymous token (never forwarded), which reads what the
        cache serves anyone, i.e. public repositories. True when answered so."""
        if self.mirror is None or client_request(request).authorization is not None:
            return False
        log.warn(
            "token: upstream {upstream} unavailable ({why}); anonymous token from the proxy",
            upstream=upstream.url,
            why=why,
        )
        respond_json(request, {**ANONYMOUS_TOKEN_RESPONSE, "expires_in": 60})
        return True

    async def relay_token(
        self,
        request: Request,
        upstream: UpstreamConfig,
        scopes: list[str],
        to_upstream: Callable[[str], str],
    ) -> None:
        challenge = await self.proxy.challenges.get(upstream)
        if challenge is None:
            # The upstream needs no auth, but a client challenged by the proxy itself
            # still wants a token: give it one that is never forwarded.
            return respond_json(request, ANONYMOUS_TOKEN_RESPONSE)
        if challenge.scheme != "bearer" or not challenge.realm:
            raise errors.RegistryError(
                404, "UNSUPPORTED", f"upstream {upstream.url} does not use token auth"
            )
        realm = challenge.realm
        realm_parts = urlsplit(realm)
        if realm_parts.scheme not in ("http", "https"):
            raise errors.bad_gateway(upstream.url, f"unusable token realm {realm!r}")
        query: list[tuple[str, str]] = []
        if challenge.service is not None:
            query.append(("service", challenge.service))
        for scope in rewrite_scopes(scopes, to_upstream):
            query.append(("scope", scope))
        for name in _TOKEN_PASSTHROUGH:
            for value in request.args.get(name.encode(), []):
                query.append((name, value.decode("utf-8", "replace")))
        separator = "&" if realm_parts.query else "?"
        url = realm + (separator + urlencode(query) if query else "")
        headers = Headers({b"user-agent": [USER_AGENT], b"accept": [b"application/json"]})
        authorization = client_request(request).authorization
        if authorization is None and upstream.credentials is not None:
            authorization = basic_authorization(upstream.credentials)
        if authorization is not None:
            headers.setRawHeaders(b"authorization", [authorization])
        response, body = await self.proxy.client(upstream).get_small(url, headers)
        request.upstream_status = response.code  # type: ignore[attr-defined]
        if response.code >= 500 and self.offline_token(
            request, upstream, f"the realm answered {response.code}"
        ):
            return
        if response.code == 200 and authorization is None:
            self.note_anonymous_token(body)
        if response.code != 200 and not is_json(body):
            # A realm's HTML error page: the client gets a registry error, same status.
            respond_error(request, errors.upstream_status(realm_parts.netloc, response.code))
            return
        request.setResponseCode(response.code, errors.reason_phrase(response.code))
        content_type = response.headers.getRawHeaders(b"content-type", [b"application/json"])
        respond_body(request, body, content_type[0])

    def note_anonymous_token(self, body: bytes) -> None:
        """A token the upstream issued with no credentials at all: the mirror's access rules
        count its bearer as anonymous (a repository it reads is public)."""
        if self.mirror is None:
            return
        try:
            document = json.loads(body)
            expires_in = float(document.get("expires_in") or 60)
            tokens = {document.get("token"), document.get("access_token")}
        except (ValueError, TypeError, AttributeError):
            return
        for token in tokens:
            if isinstance(token, str) and token:
                self.mirror.access.note_anonymous_token(token, expires_in)

    def token_upstream(
        self, request: Request, scopes: list[str]
    ) -> tuple[UpstreamConfig, Callable[[str], str]]:
        """The upstream a token request is for, and how its scope names map there.

        C{ns} (carried in the realm) decides for containerd; otherwise the
        repository scopes do, through the same routing as the API paths.
        """
        router = self.proxy.router
        host = request_host(request)
        ns = request_ns(request)
        repositories = [
            scope.name
            for scope in map(Scope.parse, scopes)
            if scope is not None and scope.is_repository
        ]
        for name in repositories:
            if not names.is_valid_name(name):
                raise errors.name_invalid(name)
        targets = {name: router.resolve(host, name, ns) for name in repositories}
        for target in targets.values():
            check_repository(request, target.upstream.name, target.repository)
        upstreams = {(t.upstream.name, t.upstream.url): t.upstream for t in targets.values()}
        if len(upstreams) > 1:
            raise errors.RegistryError(
                400,
                "DENIED",
                "one token cannot cover repositories on several upstreams",
                {"upstreams": sorted(u.url for u in upstreams.values())},
            )
        if upstreams:
            [upstream] = upstreams.values()
        else:
            upstream = router.upstream_for(host, ns)
        return upstream, lambda name: targets[name].repository


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def respond_json(request: Request, document: object) -> None:
    respond_body(request, json.dumps(document).encode(), b"application/json")


def respond_body(request: Request, body: bytes, content_type: bytes) -> None:
    """A token response: never stored by a cache between client and proxy."""
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
