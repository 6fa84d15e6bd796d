"""The upstreams' own authentication challenges, fetched once and remembered.

C{/v2/auth} needs the upstream's token realm and service; asking the upstream's
C{/v2/} on every token request would double the round trips of every pull.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers

from dockerproxy import errors
from dockerproxy.auth import Challenge, parse_www_authenticate
from dockerproxy.config import UpstreamConfig
from dockerproxy.headers import USER_AGENT
from dockerproxy.upstream import UpstreamClients


def pick_challenge(headers: Headers) -> Challenge | None:
    """The Bearer challenge if there is one, else the first challenge offered."""
    values = [v.decode("latin-1") for v in headers.getRawHeaders(b"www-authenticate", [])]
    challenges = parse_www_authenticate(values)
    for challenge in challenges:
        if challenge.scheme == "bearer" and challenge.realm:
            return challenge
    return challenges[0] if challenges else None


class ChallengeCache:
    """Per-upstream challenge, refreshed after C{ttl} seconds or when a new one is seen."""

    def __init__(self, clients: UpstreamClients, clock: IReactorTime, ttl: float = 600.0) -> None:
        self.clients = clients
        self.clock = clock
        self.ttl = ttl
        self._entries: dict[str, tuple[Challenge | None, float]] = {}

    def remember(self, upstream: UpstreamConfig, headers: Headers) -> Challenge | None:
        """Record the challenge carried by an upstream 401 the proxy saw anyway."""
        challenge = pick_challenge(headers)
        if challenge is not None:
            base = Challenge(
                challenge.scheme,
                {k: v for k, v in challenge.params.items() if k not in ("scope", "error")},
            )
            self._entries[upstream.url] = (base, self.clock.seconds() + self.ttl)
        return challenge

    async def get(self, upstream: UpstreamConfig) -> Challenge | None:
        """The upstream's challenge, or None when its C{/v2/} needs no authentication.

        Any other answer than 2xx or 401 is a 502 and is not remembered.
        """
        cached = self._entries.get(upstream.url)
        if cached is not None and cached[1] > self.clock.seconds():
            return cached[0]
        response, _ = await self.clients.for_upstream(upstream).get_small(
            f"{upstream.url}/v2/", Headers({b"user-agent": [USER_AGENT]}), limit=64 * 1024
        )
        if response.code == 401:
            return self.remember(upstream, response.headers)
        if not 200 <= response.code < 300:
            # A 5xx or 429 says nothing about auth: fail this request, ask again next time.
            raise errors.bad_gateway(upstream.url, f"answered {response.code} to /v2/")
        self._entries[upstream.url] = (None, self.clock.seconds() + self.ttl)
        return None
