"""C{docker search} through the whole Site (L{dockerproxy.search}): parameters checked
before the index is asked, its answer relayed and kept five minutes in a bounded LRU,
its failures as registry errors, and the client logins' gate."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.server import Request

from dockerproxy.config import build_config
from dockerproxy.searchcache import AnswerCache
from tests.unit.authsite import CI_TOKEN, PASSWORDS, AuthTestCase, auth_config, basic
from tests.unit.proxysite import ProxyTestCase, ScriptedHTTP, parse_response, reply

INDEX_HOST = "index.docker.io"
INDEX = "https://index.docker.io"
ALICE = basic("alice", PASSWORDS["alice"])


def answer(query: str, count: int = 1) -> bytes:
    return json.dumps(
        {
            "num_results": count,
            "query": query,
            "results": [
                {
                    "name": f"{query}{i}",
                    "description": "A minimal image",
                    "star_count": 10 - i,
                    "is_official": i == 0,
                    "is_automated": False,
                }
                for i in range(count)
            ],
        }
    ).encode()


def index(request: Request) -> bytes:
    """Docker Hub's index: the term echoed in its answer, one result per n."""
    request.setHeader(b"content-type", b"application/json")
    query = request.args[b"q"][0].decode()
    return answer(query, int(request.args[b"n"][0]))


class SearchTests(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.upstream.on(INDEX_HOST, "/v1/search", index)

    def index_requests(self) -> list[dict[str, list[str]]]:
        return [seen.query for seen in self.upstream.requests_to(INDEX_HOST)]

    def test_answered_from_the_index_as_it_came(self) -> None:
        response = self.fetch("GET", "/v1/search?q=alpine&n=2", [("Authorization", "Bearer t")])
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, answer("alpine", 2))
        self.assertEqual(response.header("content-type"), "application/json")
        [seen] = self.upstream.seen
        self.assertEqual((seen.method, seen.path), ("GET", "/v1/search"))
        self.assertEqual(seen.query, {"q": ["alpine"], "n": ["2"], "page": ["1"]})
        self.assertIsNone(seen.header("authorization"))  # the index is asked anonymously
        event = self.access[-1]
        self.assertEqual(
            (event["route"], event["cache"], event["upstream"]), ("search", "miss", INDEX)
        )

    def test_defaults_and_paging(self) -> None:
        self.fetch("GET", "/v1/search?q=redis")
        self.fetch("GET", "/v1/search?q=redis&n=100&page=3")
        self.assertEqual(
            self.index_requests(),
            [
                {"q": ["redis"], "n": ["25"], "page": ["1"]},
                {"q": ["redis"], "n": ["100"], "page": ["3"]},
            ],
        )

    def test_head(self) -> None:
        response = self.fetch("HEAD", "/v1/search?q=alpine")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-length"), str(len(answer("alpine", 25))))
        self.assertTrue(response.raw.endswith(b"\r\n\r\n"))

    def test_bad_parameters_are_refused_before_the_index(self) -> None:
        for query in (
            "",
            "q=",
            "q=%20",
            "q=" + "a" * 256,
            "q=a%00b",
            "q=%ff",
            "q=a&n=0",
            "q=a&n=101",
            "q=a&n=ten",
            "q=a&n=-1",
            "q=a&page=0",
            "q=a&page=1001",
            "q=a&q=b",
            "q=a&page=1&page=2",
        ):
            response = self.fetch("GET", f"/v1/search?{query}")
            self.assertRegistryError(response, 400, "INVALID_REQUEST")
        self.assertEqual(self.upstream.seen, [])

    def test_write_methods_and_other_v1_paths(self) -> None:
        self.assertRegistryError(self.fetch("POST", "/v1/search?q=a"), 405, "UNSUPPORTED")
        self.assertRegistryError(self.fetch("GET", "/v1/search/x?q=a"), 404, "NOT_FOUND")
        self.assertRegistryError(self.fetch("GET", "/v1/_ping"), 404, "NOT_FOUND")
        self.assertEqual(self.upstream.seen, [])

    def test_answers_are_kept_five_minutes(self) -> None:
        first = self.fetch("GET", "/v1/search?q=alpine")
        self.clock.advance(299)
        again = self.fetch("GET", "/v1/search?q=alpine")
        self.assertEqual((again.status, again.body), (200, first.body))
        self.assertEqual(self.access[-1]["cache"], "hit")
        self.assertEqual(len(self.index_requests()), 1)
        self.fetch("GET", "/v1/search?q=alpine&n=10")  # another question
        self.clock.advance(1)
        self.fetch("GET", "/v1/search?q=alpine")
        self.assertEqual(len(self.index_requests()), 3)

    def test_the_cache_is_bounded_in_entries(self) -> None:
        for i in range(1001):
            self.assertEqual(self.fetch("GET", f"/v1/search?q=term{i}&n=1").status, 200)
        answers = self.site.resource.search.index.answers  # type: ignore[attr-defined]
        self.assertEqual(len(answers), 1000)
        self.fetch("GET", "/v1/search?q=term0&n=1")  # the least recently used went first
        self.assertEqual(len(self.index_requests()), 1002)

    def test_failed_answers_are_errors_and_not_kept(self) -> None:
        for handler, status in (
            (reply(200, b"<html>hello</html>"), 502),
            (reply(200, b"[1, 2]"), 502),
            (reply(200, b"{" + b" " * (1024 * 1024) + b"}"), 502),
            (reply(500, b"<html>down</html>"), 500),
            (reply(429, b"slow down"), 429),
        ):
            self.upstream.on(INDEX_HOST, "/v1/search", handler)
            entry = self.assertRegistryError(
                self.fetch("GET", "/v1/search?q=alpine"),
                status,
                "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE",
            )
            self.assertIn(INDEX, entry["message"])
        self.upstream.on(INDEX_HOST, "/v1/search", index)
        self.assertEqual(self.fetch("GET", "/v1/search?q=alpine").status, 200)
        self.assertEqual(len(self.index_requests()), 6)

    def test_an_unreachable_index_is_a_502(self) -> None:
        self.use(
            build_config({}, {}),
            http=ScriptedHTTP(lambda: defer.fail(ConnectionRefusedError("127.0.0.1"))),
        )
        entry = self.assertRegistryError(self.fetch("GET", "/v1/search?q=a"), 502, "UNAVAILABLE")
        self.assertEqual(entry["detail"], {"upstream": INDEX})

    def test_an_index_that_does_not_answer_is_a_504(self) -> None:
        http = ScriptedHTTP()
        self.use(build_config({"timeouts": {"headers": 30}}, {}), http=http)
        transport = self.send("GET", "/v1/search?q=a")
        self.clock.advance(30.1)
        self.assertRegistryError(parse_response(transport.value(), "GET"), 504, "UNAVAILABLE")
        self.assertEqual(http.calls[0].url, f"{INDEX}/v1/search?q=a&n=25&page=1")

    def test_the_configured_index_is_asked(self) -> None:
        self.use(build_config({"search": {"upstream": "http://index.test:8080"}}, {}))
        self.upstream.on("index.test:8080", "/v1/search", index)
        self.assertEqual(self.fetch("GET", "/v1/search?q=a&n=1").body, answer("a"))
        self.assertEqual([s.host for s in self.upstream.seen], ["index.test:8080"])

    def test_without_an_index_search_is_a_404(self) -> None:
        for settings in (
            {"presets": False, "upstream": "http://r.test"},
            {"search": {"enabled": False}},
        ):
            self.use(build_config(settings, {}))
            self.assertRegistryError(self.fetch("GET", "/v1/search?q=a"), 404, "NOT_FOUND")
        self.assertEqual(self.upstream.seen, [])


class HeldHTTP:
    """The fake index's client, whose answers wait until L{release}."""

    def __init__(self, stub: Any) -> None:
        self.stub = stub
        self.asked = 0
        self.held: list[tuple[tuple[Any, ...], dict[str, Any], defer.Deferred[Any]]] = []

    def request(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.asked += 1
        self.held.append((args, kwargs, d))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for args, kwargs, d in held:
            self.stub.request(*args, **kwargs).chainDeferred(d)


class ConcurrentSearchTests(ProxyTestCase):
    def test_clients_asking_the_same_wait_for_one_index_request(self) -> None:
        held = HeldHTTP(self.stub)
        self.use(build_config({}, {}), http=held)
        self.upstream.on(INDEX_HOST, "/v1/search", index)
        transports = [self.send("GET", "/v1/search?q=alpine&n=1") for _ in range(3)]
        other = self.send("GET", "/v1/search?q=redis&n=1")
        self.assertEqual(held.asked, 2)  # one per question
        held.release()
        self.pump()
        for transport in transports:
            response = parse_response(transport.value(), "GET")
            self.assertEqual((response.status, response.body), (200, answer("alpine")))
        self.assertEqual(parse_response(other.value(), "GET").body, answer("redis"))
        self.assertEqual(sorted(e["cache"] for e in self.access), ["hit", "hit", "miss", "miss"])

    def test_after_a_failure_the_next_client_asks_again(self) -> None:
        held = HeldHTTP(self.stub)
        self.use(build_config({}, {}), http=held)
        self.upstream.on(INDEX_HOST, "/v1/search", reply(500, b"down"))
        first = self.send("GET", "/v1/search?q=alpine&n=1")
        second = self.send("GET", "/v1/search?q=alpine&n=1")
        held.release()
        self.pump()
        self.assertEqual(parse_response(first.value(), "GET").status, 500)
        self.assertEqual(held.asked, 2)  # the waiter asked in turn
        self.upstream.on(INDEX_HOST, "/v1/search", index)
        held.release()
        self.pump()
        self.assertEqual(parse_response(second.value(), "GET").body, answer("alpine"))


class AnswerCacheTests(ProxyTestCase):
    def test_bounded_in_bytes_least_recently_used_first(self) -> None:
        clock = Clock()
        cache = AnswerCache(clock, ttl=300, max_entries=10, max_bytes=100)
        cache.put("a", b"x" * 40)
        cache.put("b", b"y" * 40)
        self.assertEqual(cache.get("a"), b"x" * 40)  # now b is the least recently used
        cache.put("c", b"z" * 40)
        self.assertEqual((cache.get("a"), cache.get("b"), cache.size), (b"x" * 40, None, 80))
        cache.put("big", b"!" * 101)  # larger than the whole bound: not kept
        self.assertEqual((cache.get("big"), len(cache), cache.size), (None, 2, 80))
        cache.put("a", b"short")
        self.assertEqual(cache.size, 45)
        clock.advance(300)
        self.assertEqual((cache.get("a"), cache.size), (None, 40))


class LoggedInSearchTests(AuthTestCase):
    """With users, searching is for them."""

    def setUp(self) -> None:
        super().setUp()
        self.use(auth_config())
        self.upstream.on(INDEX_HOST, "/v1/search", index)

    def test_no_credential_gets_the_challenge_of_v2(self) -> None:
        response = self.fetch_as("GET", "/v1/search?q=alpine")
        self.assertRegistryError(response, 401, "UNAUTHORIZED")
        self.assertEqual(
            response.header("www-authenticate"),
            'Bearer realm="http://mirror.test:5000/v2/auth",service="dockerproxy"',
        )
        self.assertEqual(self.upstream.seen, [])

    def test_users_search_with_basic_credentials_or_tokens(self) -> None:
        token = self.token(authorization=ALICE)
        for authorization, user in (
            (ALICE, "alice"),
            (basic("anyone", CI_TOKEN), "ci"),
            (f"Bearer {CI_TOKEN}", "ci"),
            (f"Bearer {token}", "alice"),
        ):
            response = self.fetch_as("GET", "/v1/search?q=alpine&n=1", authorization)
            self.assertEqual((response.status, response.body), (200, answer("alpine")))
            self.assertEqual(self.last().user, user)
        self.assertEqual(self.client_credentials_upstream(), [])

    def test_an_anonymous_token_does_not_search(self) -> None:
        token = self.token()
        response = self.fetch_as("GET", "/v1/search?q=alpine", f"Bearer {token}")
        self.assertRegistryError(response, 401, "UNAUTHORIZED")
        self.assertEqual(self.upstream.requests_to(INDEX_HOST), [])

    def test_a_wrong_password_waits_and_counts_as_a_failed_login(self) -> None:
        response = self.fetch_as("GET", "/v1/search?q=a", basic("alice", "wrong"), advance=1)
        entry = self.assertRegistryError(response, 401, "UNAUTHORIZED")
        self.assertEqual(entry["message"], "invalid user name or password")
        self.assertEqual(self.last().refusal, "login")
        for _ in range(9):
            self.fetch_as("GET", "/v1/search?q=a", basic("alice", "wrong"), advance=1)
        locked = self.fetch_as("GET", "/v1/search?q=a", ALICE)
        self.assertRegistryError(locked, 429, "TOOMANYREQUESTS")
        self.assertEqual(self.upstream.requests_to(INDEX_HOST), [])
