"""The proxy's own identity at an upstream (L{dockerproxy.upstreamauth}): tokens from the
realm per (upstream, scope), kept until shortly before they expire and bounded; Basic
challenges answered with the registry's credentials; one retry, never more."""

from __future__ import annotations

import json
from collections.abc import Callable

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from dockerproxy.config import Credentials, Timeouts, UpstreamConfig
from dockerproxy.errors import RegistryError
from dockerproxy.relay import Collect
from dockerproxy.upstream import Fetched, UpstreamClient
from dockerproxy.upstreamauth import UpstreamTokens, basic_authorization, scope_for
from tests.unit.proxysite import AUTH_HOST, HUB_CHALLENGE, HUB_HOST, UNAUTHORIZED, FakeUpstream

HUB = UpstreamConfig("docker.io", f"https://{HUB_HOST}", library_prefix=True)
ALPINE = f"https://{HUB_HOST}/v2/library/alpine/manifests/3.20"
BUSYBOX = f"https://{HUB_HOST}/v2/library/busybox/manifests/1"


class UpstreamTokensTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = FakeUpstream()
        self.stub = StubTreq(self.upstream)
        self.client = UpstreamClient(self.stub, self.clock, Timeouts())
        self.tokens = UpstreamTokens(self.clock)
        self.issued = 0
        self.expires_in: float | None = 300
        self.realm_status = 200
        self.upstream.on(AUTH_HOST, "/token", self.token)
        for path in ("/v2/library/alpine/manifests/3.20", "/v2/library/busybox/manifests/1"):
            self.upstream.on(HUB_HOST, path, self.registry(path))

    def token(self, request: Request) -> bytes:
        self.issued += 1
        request.setResponseCode(self.realm_status)
        request.setHeader(b"content-type", b"application/json")
        document: dict[str, object] = {"token": f"tok{self.issued}"}
        if self.expires_in is not None:
            document["expires_in"] = self.expires_in
        return json.dumps(document).encode()

    def registry(self, path: str) -> Callable[[Request], bytes]:
        repository = path.split("/")[2] + "/" + path.split("/")[3]

        def handle(request: Request) -> bytes:
            if (request.getHeader(b"authorization") or b"").startswith(b"Bearer tok"):
                return b"manifest"
            request.setResponseCode(401)
            request.setHeader(
                b"www-authenticate", f'{HUB_CHALLENGE},scope="repository:{repository}:pull"'
            )
            return UNAUTHORIZED

        return handle

    def fetch(self, url: str = ALPINE, upstream: UpstreamConfig = HUB) -> tuple[int, bytes]:
        d = Deferred.fromCoroutine(self.tokens.fetch(self.client, upstream, b"GET", url, Headers()))
        for _ in range(5):
            self.stub.flush()
        fetched: Fetched = self.successResultOf(d)
        collect = Collect(1 << 20, self.clock, 60)
        fetched.response.deliverBody(collect)
        self.stub.flush()
        return fetched.response.code, self.successResultOf(collect.done)

    def hub_authorizations(self) -> list[str | None]:
        return [s.header("authorization") for s in self.upstream.requests_to(HUB_HOST)]

    def test_a_bearer_challenge_gets_a_token_and_one_retry(self) -> None:
        self.assertEqual(self.fetch(), (200, b"manifest"))
        [realm] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual(realm.query, {"service": ["registry.docker.io"],
                                       "scope": ["repository:library/alpine:pull"]})  # fmt: skip
        self.assertIsNone(realm.header("authorization"))
        self.assertEqual(self.hub_authorizations(), [None, "Bearer tok1"])

    def test_tokens_are_kept_per_scope_until_shortly_before_they_expire(self) -> None:
        self.fetch()
        self.fetch()
        self.assertEqual(self.issued, 1)
        self.fetch(BUSYBOX)  # another scope: another token
        self.assertEqual(self.issued, 2)
        self.clock.advance(289)
        self.fetch()
        self.assertEqual(self.issued, 2)
        self.clock.advance(1)  # 10 s before the realm's 300 s
        self.fetch()
        self.assertEqual(self.issued, 3)
        self.assertEqual(self.hub_authorizations()[-2:], [None, "Bearer tok3"])

    def test_a_realm_that_says_nothing_of_expiry_means_60_seconds(self) -> None:
        self.expires_in = None
        self.fetch()
        self.clock.advance(50)
        self.fetch()
        self.assertEqual(self.issued, 2)

    def test_a_kept_token_the_upstream_refuses_is_replaced_once(self) -> None:
        self.fetch()
        self.upstream.on(HUB_HOST, "/v2/library/alpine/manifests/3.20", self.only("Bearer tok2"))
        self.assertEqual(self.fetch(), (200, b"manifest"))
        self.assertEqual(
            self.hub_authorizations(), [None, "Bearer tok1", "Bearer tok1", "Bearer tok2"]
        )

    def only(self, authorization: str) -> Callable[[Request], bytes]:
        def handle(request: Request) -> bytes:
            if request.getHeader(b"authorization") == authorization.encode():
                return b"manifest"
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", HUB_CHALLENGE)
            return UNAUTHORIZED

        return handle

    def test_a_refusing_realm_leaves_the_upstreams_401(self) -> None:
        self.realm_status = 401
        self.assertEqual(self.fetch(), (401, UNAUTHORIZED))
        self.assertEqual(self.hub_authorizations(), [None])  # no retry without a token

    def test_the_registrys_credentials_go_to_the_realm(self) -> None:
        bot = UpstreamConfig("docker.io", HUB.url, True, credentials=Credentials("bot", "pw"))
        self.fetch(upstream=bot)
        [realm] = self.upstream.requests_to(AUTH_HOST)
        self.assertEqual(
            realm.header("authorization"), basic_authorization(bot.credentials).decode()
        )  # type: ignore[arg-type]

    def test_a_basic_challenge_gets_the_credentials_and_keeps_them(self) -> None:
        bot = UpstreamConfig("docker.io", HUB.url, True, credentials=Credentials("bot", "pw"))
        expected = basic_authorization(Credentials("bot", "pw")).decode()
        self.upstream.on(HUB_HOST, "/v2/library/alpine/manifests/3.20", self.basic(expected))
        self.assertEqual(self.fetch(upstream=bot), (200, b"manifest"))
        self.assertEqual(self.fetch(upstream=bot), (200, b"manifest"))
        self.assertEqual(self.hub_authorizations(), [None, expected, expected])
        # Without credentials, a Basic challenge is the answer.
        self.assertEqual(self.fetch(upstream=HUB)[0], 401)

    def basic(self, expected: str) -> Callable[[Request], bytes]:
        def handle(request: Request) -> bytes:
            if request.getHeader(b"authorization") == expected.encode():
                return b"manifest"
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Basic realm="registry"')
            return UNAUTHORIZED

        return handle

    def test_a_realm_without_a_token_is_a_502(self) -> None:
        self.upstream.on(AUTH_HOST, "/token", lambda request: b'{"nothing": "here"}')
        d = Deferred.fromCoroutine(self.tokens.fetch(self.client, HUB, b"GET", ALPINE, Headers()))
        for _ in range(5):
            self.stub.flush()
        error = self.failureResultOf(d, RegistryError).value
        self.assertEqual(
            (error.status, error.message.endswith("sent no usable token")), (502, True)
        )

    def test_an_unusable_realm_is_a_502(self) -> None:
        self.upstream.on(
            HUB_HOST,
            "/v2/library/alpine/manifests/3.20",
            lambda request: self.challenge(request, 'Bearer realm="ftp://x.test/token"'),
        )
        d = Deferred.fromCoroutine(self.tokens.fetch(self.client, HUB, b"GET", ALPINE, Headers()))
        for _ in range(5):
            self.stub.flush()
        self.assertEqual(self.failureResultOf(d, RegistryError).value.status, 502)
        self.assertEqual(self.upstream.requests_to("x.test"), [])

    def challenge(self, request: Request, value: str) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", value)
        return UNAUTHORIZED

    def test_kept_tokens_are_bounded(self) -> None:
        tokens = UpstreamTokens(self.clock, max_tokens=3)
        self.tokens = tokens
        names = ["alpine", "busybox"]
        for n in range(10):
            path = f"/v2/library/img{n}/manifests/1"
            self.upstream.on(HUB_HOST, path, self.registry(path))
            names.append(f"img{n}")
            self.fetch(f"https://{HUB_HOST}{path}")
        self.assertEqual(len(tokens._kept), 3)
        self.assertNotIn("tok", repr(tokens))


def test_scope_for() -> None:
    assert scope_for(HUB, ALPINE) == "repository:library/alpine:pull"
    assert scope_for(HUB, f"{HUB.url}/v2/ghcr.io/a/b/blobs/sha256:{'a' * 64}") == (
        "repository:ghcr.io/a/b:pull"
    )
    assert scope_for(HUB, f"{HUB.url}/v2/library/alpine/tags/list?n=10") == (
        "repository:library/alpine:pull"
    )
    assert scope_for(HUB, f"{HUB.url}/v2/") is None
    assert scope_for(HUB, f"{HUB.url}/v2/_catalog") is None
