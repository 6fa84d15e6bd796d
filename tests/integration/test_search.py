"""docker search through a real dockerproxy, answered from a fake Docker Hub index.

The proxy runs with ``--no-presets`` and ``--search-upstream`` pointing at the tests'
own index (L{tests.harness.ociapi}); nothing reaches the real Docker Hub. A real dockerd
runs ``docker search 127.0.0.1:PORT/alpine`` (127.0.0.0/8 is an insecure registry to it
by default), and plain HTTP shows the answer kept five minutes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.authproxy import ALICE, AuthProxy
from tests.harness.daemons import Dockerd, start_dockerd
from tests.harness.engines import missing_tools
from tests.harness.ociapi import FixtureServer, search_answer, start_search_index
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.upstream import Upstream


@pytest.fixture
def index() -> Iterator[FixtureServer]:
    server = start_search_index()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(start_proxy: StartProxy, index: FixtureServer) -> ProxyProcess:
    return start_proxy(
        "--no-presets",
        "--upstream",
        "http://127.0.0.1:9",  # never asked: a search goes to the index only
        "--search-upstream",
        index.url,
        "--log-format",
        "json",
    )


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_search_is_answered_from_the_index_and_kept(
    proxy: ProxyProcess, index: FixtureServer
) -> None:
    for _ in range(3):
        status, body = get(f"{proxy.url}/v1/search?q=alpine&n=2")
        assert status == 200, body
        assert json.loads(body) == search_answer("alpine", 2)
    assert [(s.path, s.query) for s in index.seen] == [
        ("/v1/search", {"q": ["alpine"], "n": ["2"], "page": ["1"]})
    ]
    assert [e["cache"] for e in proxy.access_events() if e["route"] == "search"] == [
        "miss",
        "hit",
        "hit",
    ]
    status, body = get(f"{proxy.url}/v1/search?q=alpine&n=1000")
    assert status == 400, body
    assert len(index.seen) == 1


def test_search_without_an_index_is_a_404(start_proxy: StartProxy) -> None:
    proxy = start_proxy("--no-presets", "--upstream", "http://127.0.0.1:9")
    status, body = get(f"{proxy.url}/v1/search?q=alpine")
    assert status == 404, body
    assert json.loads(body)["errors"][0]["code"] == "NOT_FOUND"


@pytest.fixture
def dockerd(tmp: Path) -> Iterator[Dockerd]:
    problem = missing_tools("dockerd", "docker")
    if problem:
        pytest.fail(problem, pytrace=False)
    engine = start_dockerd(tmp / "dockerd")
    try:
        yield engine
    finally:
        engine.stop()


@pytest.mark.daemons
def test_docker_search_through_the_proxy(
    proxy: ProxyProcess, index: FixtureServer, dockerd: Dockerd
) -> None:
    result = dockerd.docker(
        "search",
        "--limit",
        "5",
        "--no-trunc",
        "--format",
        "{{.Name}}|{{.StarCount}}|{{.IsOfficial}}|{{.Description}}",
        f"{proxy.host}/alpine",
    )
    lines = result.stdout.strip().splitlines()
    assert lines == [
        f"{r['name']}|{r['star_count']}|{'[OK]' if r['is_official'] else ''}|{r['description']}"
        for r in search_answer("alpine", 5)["results"]
    ], result.describe()
    searched = [s for s in index.seen if s.path == "/v1/search"]
    assert [s.query["q"] for s in searched] == [["alpine"]]
    assert searched[0].query["n"] == ["5"]


@pytest.mark.daemons
def test_docker_search_is_for_users_when_the_proxy_has_them(
    start_proxy: StartProxy, upstream: Upstream, index: FixtureServer, dockerd: Dockerd, tmp: Path
) -> None:
    auth = AuthProxy(start_proxy, upstream, tmp / "proxy", "--search-upstream", index.url)
    host = auth.proxy.host
    anonymous = dockerd.docker("search", f"{host}/alpine", check=False)
    assert anonymous.returncode != 0, anonymous.describe()
    assert index.seen == []

    login = dockerd.docker("login", "-u", ALICE[0], "-p", ALICE[1], host, check=False)
    assert login.returncode == 0, login.describe()
    found = dockerd.docker("search", "--format", "{{.Name}}", f"{host}/alpine", check=False)
    assert found.returncode == 0, f"{found.describe()}\n{auth.proxy.log_text()[-3000:]}"
    assert found.stdout.split() == [r["name"] for r in search_answer("alpine", 25)["results"]]
    assert [s.authorization for s in index.seen] == [None]  # the index is asked anonymously
    assert ALICE[1] not in auth.proxy.log_text()
