"""C{GET /v1/search}: C{docker search}, answered from the configured index.

dockerd asks a registry's C{/v1/search?q=&n=} for C{docker search HOST/TERM}; the
proxy asks its search upstream (C{--search-upstream}, Docker Hub's index by default)
and answers its JSON as it came. The index is asked anonymously, whoever the client
is, so an answer is public and one serves every client for five minutes
(L{dockerproxy.searchcache}). Parameters are checked before anything is asked: a
term of at most 255 characters, C{n} 1..100 (25 by default), C{page} 1..1000.

With users (C{[auth]}), searching is for them: a client without a user's credential
(a password or static token as Basic credentials, the proxy's token or a static
token as a bearer token) gets the 401 challenge C{/v2/} gives. Anonymous pulls
(C{--anonymous-pull}) name repositories, and a search names none.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from dockerproxy import errors
from dockerproxy.clientauth import ClientAuth
from dockerproxy.coalesce import Coalescer
from dockerproxy.config import UpstreamConfig
from dockerproxy.edge import client_request, invalid_request
from dockerproxy.exchange import MAX_ERROR_BODY, Proxy
from dockerproxy.headers import USER_AGENT
from dockerproxy.proxytokens import Grant
from dockerproxy.rendering import PullResource, render_async
from dockerproxy.searchcache import AnswerCache
from dockerproxy.tokenservice import parse_basic

log = Logger()

MAX_TERM = 255
MAX_RESULTS = 100
DEFAULT_RESULTS = 25
MAX_PAGE = 1000
MAX_ANSWER = 1024 * 1024  # an index's answer larger than this is a 502

SearchKey = tuple[str, int, int]  # (q, n, page)


class SearchIndex:
    """The search upstream and its answers, kept L{AnswerCache}'s TTL."""

    def __init__(self, proxy: Proxy, upstream: UpstreamConfig) -> None:
        self.proxy = proxy
        self.upstream = upstream
        self.answers = AnswerCache(proxy.clock)
        self.asking = Coalescer()  # one index request per question at a time

    async def answer(self, request: Request, key: SearchKey) -> bytes:
        """The kept answer to C{key}, or the index's; clients asking while the index is
        asked wait for its answer rather than ask again."""
        while (body := self.answers.get(key)) is None and key in self.asking:
            await self.asking.follow(key)
        if body is not None:
            request.cache = "hit"  # type: ignore[attr-defined]
            return body
        request.cache = "miss"  # type: ignore[attr-defined]
        request.upstream = self.upstream.url  # type: ignore[attr-defined]
        with self.asking.lead(key):
            body = await self.ask(request, key)
            self.answers.put(key, body)  # before the waiters look again
        return body

    async def ask(self, request: Request, key: SearchKey) -> bytes:
        """The index's answer to C{key}: a JSON object of at most L{MAX_ANSWER} bytes, or
        the registry error for what it did instead."""
        q, n, page = key
        url = f"{self.upstream.url}/v1/search?" + urlencode({"q": q, "n": n, "page": page})
        headers = Headers({b"user-agent": [USER_AGENT], b"accept": [b"application/json"]})
        client = self.proxy.client(self.upstream)
        response = (await client.fetch(b"GET", url, headers)).response
        request.upstream_status = response.code  # type: ignore[attr-defined]
        if response.code != 200:
            await client.read_small(response, self.upstream.url, MAX_ERROR_BODY)
            raise errors.upstream_status(self.upstream.url, response.code)
        body = await client.read_small(response, self.upstream.url, MAX_ANSWER)
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise errors.bad_gateway(self.upstream.url, "its answer is not a JSON object")
        return body


class SearchResource(PullResource):
    """C{/v1/search}, through the client logins when there are users."""

    isLeaf = True

    def __init__(self, index: SearchIndex | None, client_auth: ClientAuth | None = None) -> None:
        super().__init__()
        self.index = index
        self.client_auth = client_auth

    def render_GET(self, request: Request) -> int:
        return render_async(request, lambda: self.serve(request))

    async def serve(self, request: Request) -> None:
        if self.index is None:
            raise errors.RegistryError(404, "NOT_FOUND", "this proxy does not answer searches")
        key = search_key(request)
        if self.client_auth is not None:
            await authorize(self.client_auth, request)
        body = await self.index.answer(request, key)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(body))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()


def search_key(request: Request) -> SearchKey:
    """C{(q, n, page)}, checked: a 400 C{INVALID_REQUEST} for anything out of bounds."""
    raw = request.args.get(b"q", [b""])[0]
    try:
        q = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise invalid_request("q must be UTF-8") from None
    if not q or len(q) > MAX_TERM or not q.isprintable():
        raise invalid_request(f"q must be a search term of 1 to {MAX_TERM} characters")
    n = _number(request, b"n", DEFAULT_RESULTS, MAX_RESULTS)
    page = _number(request, b"page", 1, MAX_PAGE)
    return q, n, page


def _number(request: Request, name: bytes, default: int, maximum: int) -> int:
    raw = request.args.get(name, [b""])[0]
    if not raw:
        return default
    if not raw.isdigit() or len(raw) > 6 or not 1 <= int(raw) <= maximum:
        raise invalid_request(f"{name.decode()} must be a number from 1 to {maximum}")
    return int(raw)


async def authorize(auth: ClientAuth, request: Request) -> None:
    """Let a user's search through, or raise the 401 (or 429) its client gets."""
    authorization = client_request(request).authorization
    scheme, _, value = (authorization or b"").partition(b" ")
    if scheme.lower() == b"basic":
        auth.refuse_if_locked_out(request)
        credentials = parse_basic(value.strip())
        user = None if credentials is None else await auth.check_password(request, *credentials)
        if user is None:
            await auth.login_failed(request)
            request.refusal = "login"  # type: ignore[attr-defined]
            request.setHeader(b"www-authenticate", b'Basic realm="dockerproxy"')
            raise errors.RegistryError(401, "UNAUTHORIZED", "invalid user name or password")
        auth.passed(request, Grant(user, None))
        return
    grant = await auth.credential(request, None)
    if grant.user is None:
        raise auth.challenge(request, None)
    auth.passed(request, grant)
