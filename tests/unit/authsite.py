"""A proxy Site whose clients log in to it (L{dockerproxy.clientauth}), over the fake
upstream of L{tests.unit.proxysite}: users with cheap bcrypt hashes, a static token,
the signing key given directly, and each request remembered as the Site made it (its
C{user} and C{refusal})."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from typing import Any

import bcrypt
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.web.server import Request

from dockerproxy.config import AuthSettings, CacheConfig, Config, build_config
from dockerproxy.patterns import RepositoryPattern
from dockerproxy.site import ProxyRequest
from dockerproxy.wiring import (
    make_client_auth,
    make_mirror,
    make_proxy,
    make_search,
    make_site,
)
from tests.unit.fakes import SyncPool
from tests.unit.proxysite import (
    AUTH_HOST,
    HUB_CHALLENGE,
    HUB_HOST,
    MANIFEST,
    MIRROR,
    UNAUTHORIZED,
    ProxyTestCase,
    Response,
    parse_response,
)

KEY = b"s" * 32
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
CI_TOKEN = "ci-static-token-0123456789"
# The peer every test connection comes from: a trusted proxy, so X-Forwarded-For names
# the client (see AuthTestCase.fetch_as).
PEER = StringTransport().getPeer().host
UPSTREAM_TOKEN = "upstream-token-of-the-proxy"
INDEX = "application/vnd.oci.image.index.v1+json"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def auth_settings(anonymous: tuple[str, ...] = (), **changes: Any) -> AuthSettings:
    return replace(
        AuthSettings(
            htpasswd="/etc/dockerproxy/htpasswd",
            tokens="/etc/dockerproxy/tokens.toml",
            users={u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)) for u, p in PASSWORDS.items()},
            static_tokens={"ci": CI_TOKEN},
            anonymous_pull=tuple(RepositoryPattern(p) for p in anonymous),
            admins=("alice",),
        ),
        **changes,
    )


def auth_config(auth: AuthSettings | None = None, toml: dict[str, Any] | None = None) -> Config:
    config = build_config({"access": {"trusted_proxies": [PEER]}, **(toml or {})}, {})
    return replace(config, auth=auth or auth_settings())


class AuthTestCase(ProxyTestCase):
    """L{ProxyTestCase} with L{use} building the client logins too."""

    def use(self, config: Config, http: Any = None, cache_dir: str | None = None) -> None:
        config = replace(config, cache=CacheConfig(directory=cache_dir))
        self.proxy, _ = make_proxy(config, self.clock, http=http or self.stub)
        self.mirror = make_mirror(config.cache, self.clock, self.proxy, SyncPool())
        if self.mirror is not None:
            self.mirror.blobs.start()
            self.mirror.access.load()
        self.client_auth = make_client_auth(config, self.proxy, self.clock, SyncPool())
        self.client_auth.use_key(KEY)
        self.site = make_site(
            self.proxy,
            self.clock,
            mirror=self.mirror,
            access=config.access,
            client_auth=self.client_auth if self.client_auth.enabled else None,
            search=make_search(config, self.proxy),
        )
        self.site.policy.apply(config)
        self.requests: list[ProxyRequest] = []
        self.site.requestFactory = self._remember  # type: ignore[method-assign,assignment]
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def _remember(self, *args: Any, **kwargs: Any) -> ProxyRequest:
        request = ProxyRequest(*args, **kwargs)
        self.requests.append(request)
        return request

    def fetch_as(
        self,
        method: str,
        path: str,
        authorization: str | None = None,
        client: str = "192.0.2.10",
        advance: float = 0.0,
    ) -> Response:
        """One request from C{client} (named by the trusted peer's X-Forwarded-For),
        accepting OCI indexes; the clock is moved C{advance} seconds before the response
        is read."""
        headers = [("X-Forwarded-For", client), ("Accept", INDEX)]
        if authorization is not None:
            headers.append(("Authorization", authorization))
        transport = self.send(method, path, headers)
        if advance:
            self.clock.advance(advance)
            self.pump()
        return parse_response(transport.value(), method)

    def login(
        self, scopes: tuple[str, ...] = (), authorization: str | None = None, **kwargs: Any
    ) -> Response:
        query = "&".join(f"scope={s}" for s in scopes)
        return self.fetch_as("GET", f"/v2/auth?{query}", authorization, **kwargs)

    def token(self, *repositories: str, authorization: str | None = None) -> str:
        response = self.login(
            tuple(f"repository:{r}:pull" for r in repositories), authorization=authorization
        )
        assert response.status == 200, response.raw
        token = response.json()["token"]
        assert isinstance(token, str)
        return token

    def last(self) -> ProxyRequest:
        return self.requests[-1]

    def log_text(self) -> str:
        return "\n".join(formatEvent(e) + json.dumps(e, default=repr) for e in self.events)

    # -- the upstream ----------------------------------------------------------------------

    def serve_upstream(self, path: str, body: bytes = MANIFEST) -> None:
        """C{path} on Docker Hub: served for the proxy's upstream token, else a 401
        challenge naming the repository's scope, as distribution answers."""
        repository = path.split("/v2/", 1)[1].rsplit("/manifests/", 1)[0].rsplit("/tags/", 1)[0]

        def handle(request: Request) -> bytes:
            if request.getHeader(b"authorization") == f"Bearer {UPSTREAM_TOKEN}".encode():
                request.setHeader(b"content-type", INDEX.encode())
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                request.setHeader(b"docker-content-digest", digest.encode())
                request.setHeader(b"content-length", b"%d" % len(body))
                return b"" if request.method == b"HEAD" else body
            request.setResponseCode(401)
            request.setHeader(
                b"www-authenticate",
                f'{HUB_CHALLENGE},scope="repository:{repository}:pull"'.encode(),
            )
            return UNAUTHORIZED

        self.upstream.on(HUB_HOST, path, handle)

        def token(request: Request) -> bytes:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"token": UPSTREAM_TOKEN, "expires_in": 300}).encode()

        self.upstream.on(AUTH_HOST, "/token", token)

    def client_credentials_upstream(self) -> list[str]:
        """Every Authorization the upstream side saw that the proxy did not make itself."""
        proxy_own = {f"Bearer {UPSTREAM_TOKEN}", None}
        return [
            value
            for seen in self.upstream.seen
            if (value := seen.header("authorization")) not in proxy_own
        ]


__all__ = ["MIRROR", "AuthTestCase"]
