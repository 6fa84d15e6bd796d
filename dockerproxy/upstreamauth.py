"""The proxy's own identity at the upstreams, used when clients log in to the proxy.

Then no client credential ever goes upstream: the proxy asks as itself, anonymously
or with the registry's configured credentials (C{[registries.NAME] username} /
C{password}, C{--upstream-credentials}), as distribution's and zot's pull-through
caches do. A Bearer challenge is answered with a token from the upstream's realm,
kept per (upstream, scope) until shortly before it expires; a Basic one with the
credentials. Either way the request is retried once.
"""

from __future__ import annotations

import base64
import json
import re
from collections import OrderedDict
from urllib.parse import urlencode, urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from dockerproxy import errors, names
from dockerproxy.auth import Challenge
from dockerproxy.challenges import pick_challenge
from dockerproxy.config import Credentials, UpstreamConfig
from dockerproxy.headers import USER_AGENT
from dockerproxy.relay import discard
from dockerproxy.upstream import Fetched, UpstreamClient

log = Logger()

MAX_TOKENS = 10_000  # tokens kept, over all upstreams and scopes
MAX_TOKEN_RESPONSE = 64 * 1024
DEFAULT_EXPIRES_IN = 60.0  # the token spec's default when a realm says nothing
MARGIN = 10.0  # seconds before its expiry a token stops being used
BASIC_TTL = 300.0  # how long a Basic challenge is answered before being asked

_TOKEN_RE = re.compile(r"[!-~]+")  # what may go in an Authorization header as it came
# (upstream name, URL, the proxy's credentials there, scope): what an authorization is for.
Key = tuple[str, str, Credentials | None, str | None]


def basic_authorization(credentials: Credentials) -> bytes:
    token = f"{credentials.username}:{credentials.password}".encode()
    return b"Basic " + base64.b64encode(token)


def scope_for(upstream: UpstreamConfig, url: str) -> str | None:
    """The pull scope of an upstream API URL (C{None} for C{/v2/} itself)."""
    path = urlsplit(url).path
    if path.rstrip("/") == "/v2":
        return None
    try:
        api = names.parse_api_path(path)
    except errors.RegistryError:
        return None
    return f"repository:{api.name}:pull"


class UpstreamTokens:
    """Upstream authorizations per (upstream, its credentials, scope), bounded
    (L{MAX_TOKENS}, the oldest dropped first)."""

    def __init__(self, clock: IReactorTime, max_tokens: int = MAX_TOKENS) -> None:
        self.clock = clock
        self.max_tokens = max_tokens
        self._kept: OrderedDict[Key, tuple[bytes, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<UpstreamTokens kept={len(self._kept)}>"  # never a token

    async def fetch(
        self,
        client: UpstreamClient,
        upstream: UpstreamConfig,
        method: bytes,
        url: str,
        headers: Headers,
    ) -> Fetched:
        """C{method url} as the proxy; C{headers} must carry no client credential."""
        scope = scope_for(upstream, url)
        key: Key = (upstream.name, upstream.url, upstream.credentials, scope)
        kept = self._get(key)
        if kept is not None:
            headers.setRawHeaders(b"authorization", [kept])
        fetched = await client.fetch(method, url, headers)
        if fetched.response.code != 401:
            return fetched
        self._kept.pop(key, None)
        try:
            authorization = await self._answer(client, upstream, fetched, scope, key)
        except errors.RegistryError:
            await discard(fetched.response)
            raise
        if authorization is None:
            return fetched  # the upstream's 401 is the answer
        await discard(fetched.response)
        headers.setRawHeaders(b"authorization", [authorization])
        return await client.fetch(method, url, headers)

    async def _answer(
        self,
        client: UpstreamClient,
        upstream: UpstreamConfig,
        fetched: Fetched,
        scope: str | None,
        key: Key,
    ) -> bytes | None:
        """How to answer the upstream's challenge (and keep the answer), or None."""
        challenge = pick_challenge(fetched.response.headers)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if upstream.credentials is None:
                return None
            authorization = basic_authorization(upstream.credentials)
            self._keep(key, authorization, BASIC_TTL)
            return authorization
        if challenge.scheme != "bearer" or not challenge.realm:
            return None
        found = await self._token(client, upstream, challenge, scope)
        if found is None:
            return None
        token, expires_in = found
        authorization = b"Bearer " + token.encode("ascii")
        self._keep(key, authorization, expires_in)
        return authorization

    async def _token(
        self,
        client: UpstreamClient,
        upstream: UpstreamConfig,
        challenge: Challenge,
        scope: str | None,
    ) -> tuple[str, float] | None:
        """A token from the challenge's realm for the scope it names (else C{scope}), with
        the registry's credentials if it has any; None if the realm refuses."""
        realm = challenge.realm or ""
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.bad_gateway(upstream.url, f"unusable token realm {realm!r}")
        query = []
        if challenge.service is not None:
            query.append(("service", challenge.service))
        wanted = challenge.params.get("scope") or scope
        if wanted:
            query.extend(("scope", s) for s in wanted.split())
        url = (realm + ("&" if parts.query else "?") + urlencode(query)) if query else realm
        headers = Headers({b"user-agent": [USER_AGENT], b"accept": [b"application/json"]})
        if upstream.credentials is not None:
            headers.setRawHeaders(b"authorization", [basic_authorization(upstream.credentials)])
        response, body = await client.get_small(url, headers, limit=MAX_TOKEN_RESPONSE)
        if response.code != 200:
            log.warn(
                "upstream {upstream}: its token realm answered {code} to the proxy",
                upstream=upstream.url,
                code=response.code,
            )
            return None
        return _parse_token(upstream, body)

    def _get(self, key: Key) -> bytes | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        if kept[1] <= self.clock.seconds():
            del self._kept[key]
            return None
        return kept[0]

    def _keep(self, key: Key, authorization: bytes, expires_in: float) -> None:
        lifetime = max(expires_in - MARGIN, expires_in / 2)
        self._kept.pop(key, None)
        self._kept[key] = (authorization, self.clock.seconds() + lifetime)
        while len(self._kept) > self.max_tokens:
            self._kept.popitem(last=False)


def _parse_token(upstream: UpstreamConfig, body: bytes) -> tuple[str, float]:
    """C{token} (or C{access_token}) and C{expires_in} of a token response; a 502 for
    anything else (it is never quoted: it may hold a token)."""
    try:
        document = json.loads(body)
        token = document.get("token") or document.get("access_token")
        expires_in = float(document.get("expires_in") or DEFAULT_EXPIRES_IN)
    except (ValueError, TypeError, AttributeError):
        token, expires_in = None, 0.0
    if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
        raise errors.bad_gateway(upstream.url, "its token realm sent no usable token")
    return token, max(expires_in, 1.0)
