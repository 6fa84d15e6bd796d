"""Session fixtures for integration tests: real upstream registries on 127.0.0.1.

Fixtures (all session-scoped except ``tmp``; everything is stopped at session end):

- ``tokenserver``: the token server shared by the token-auth registries.
- ``upstream``: docker-registry with token auth, seeded with ``library/alpine:3.20`` ("alpine"),
  ``public/multiarch:1`` ("multiarch", an OCI index), ``private/secret:1`` ("secret"), and in
  Docker formats ``library/hello:1`` ("docker", schema 2) and ``public/dockerlist:1``
  ("dockerlist", a manifest list). Keys are those of ``upstream.images``.
- ``plain_upstream``: docker-registry without auth, seeded with ``library/plain:1`` ("plain").
- ``redirect_upstream``: token-auth registry whose blob GETs answer 307 to a CDN process that
  refuses requests with an Authorization header; seeded with ``library/alpine:3.20``.
- ``make_upstream``: per-test factory, ``make_upstream(auth=True, redirect=False, seed=None,
  **tokenserver_options)``, for tests that stop/restart/mutate an upstream or need other token
  settings (short ``expires_in``, ``header="x5c"``, ``key_kind="ec"``).
- ``misbehaving``: a registry that misbehaves by repository name (tests.harness.misbehaving).
- ``tmp``: a fresh per-test work directory.
- ``gate_factory``: ``gate(target_port, hold_after)`` makes forwarders that hold upstream
  responses mid-body (tests.harness.gate), closed at teardown.

Session registries are shared: a test that adds content should use repository names of its own.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.gate import Gate
from tests.harness.misbehaving import Misbehaving
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.proxy import start_proxy as proxy_process
from tests.harness.redis import RedisServer, start_redis
from tests.harness.seaweed import Seaweed, start_seaweed
from tests.harness.tokenauth import TokenServer
from tests.harness.upstream import (
    Creds,
    Upstream,
    UpstreamFactory,
    make_creds,
    seed_alpine_only,
    seed_plain,
    seed_standard,
    start_default_tokenserver,
    start_upstream,
)

INTEGRATION_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration is an integration test (``-m 'not integration'``)."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the tails of the upstream server logs to the report."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Upstream):
                report.sections.append((f"{name} server logs", value.log_tails()))
    return report


@pytest.fixture(scope="session")
def _require_tools() -> None:
    """Fail (never skip) without the upstream tools: scripts/test.sh installs them."""
    missing = [tool for tool in ("docker-registry", "skopeo") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; run scripts/test.sh as root")


@pytest.fixture(scope="session")
def harness_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the session's server state and logs (kept by pytest for post-mortems)."""
    return tmp_path_factory.mktemp("harness")


@pytest.fixture(scope="session")
def upstream_creds() -> tuple[Creds, Creds]:
    """(pusher, reader) credentials, fresh for the session."""
    return make_creds()


@pytest.fixture(scope="session")
def tokenserver(
    _require_tools: None, harness_dir: Path, upstream_creds: tuple[Creds, Creds]
) -> Iterator[TokenServer]:
    """The token server of ``upstream`` and ``redirect_upstream`` (RS256, ``kid`` header)."""
    pusher, reader = upstream_creds
    with contextlib.ExitStack() as stack:
        yield start_default_tokenserver(harness_dir, stack, pusher, reader)


@pytest.fixture(scope="session")
def upstream(
    tokenserver: TokenServer, harness_dir: Path, upstream_creds: tuple[Creds, Creds]
) -> Iterator[Upstream]:
    """Token-auth docker-registry with the standard images (see ``seed_standard``)."""
    pusher, reader = upstream_creds
    with contextlib.ExitStack() as stack:
        yield start_upstream(
            harness_dir / "upstream", stack, tokenserver, pusher, reader, seed_standard
        )


@pytest.fixture(scope="session")
def plain_upstream(_require_tools: None, harness_dir: Path) -> Iterator[Upstream]:
    """docker-registry without authentication, seeded with ``library/plain:1`` ("plain")."""
    with contextlib.ExitStack() as stack:
        yield start_upstream(harness_dir / "plain", stack, None, None, None, seed_plain)


@pytest.fixture(scope="session")
def redirect_upstream(
    tokenserver: TokenServer, harness_dir: Path, upstream_creds: tuple[Creds, Creds]
) -> Iterator[Upstream]:
    """Token-auth registry whose blobs redirect (307) to ``.cdn``; seeded with "alpine"."""
    pusher, reader = upstream_creds
    with contextlib.ExitStack() as stack:
        yield start_upstream(
            harness_dir / "redirect",
            stack,
            tokenserver,
            pusher,
            reader,
            seed_alpine_only,
            redirect=True,
        )


@pytest.fixture
def make_upstream(_require_tools: None, tmp_path: Path) -> Iterator[UpstreamFactory]:
    """Factory for per-test upstreams, for tests that stop, restart or mutate the upstream or
    need other token settings: ``up = make_upstream(redirect=True, expires_in=2)``."""
    with contextlib.ExitStack() as stack:
        yield UpstreamFactory(stack, tmp_path / "upstreams")


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[StartProxy]:
    """Factory: ``start_proxy("--upstream", url, ...)`` runs dockerproxy; all stop at teardown."""
    started: list[ProxyProcess] = []

    def start(*args: str, **kwargs: Any) -> ProxyProcess:
        kwargs.setdefault("name", f"dockerproxy-{len(started)}")
        proxy = proxy_process(tmp_path / "proxy", *args, **kwargs)
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


@pytest.fixture(scope="session")
def misbehaving() -> Iterator[Misbehaving]:
    """The misbehaving registry (tests.harness.misbehaving) on 127.0.0.1 and 127.0.0.2."""
    server = Misbehaving()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """SeaweedFS's S3 gateway for a module's tests (each its own bucket: ``unique``)."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Debian's redis-server for one test (a test may stop it)."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """A fresh work directory for one test (skopeo outputs, configs, ...)."""
    return tmp_path


@pytest.fixture
def gate_factory() -> Iterator[Callable[[int, int], Gate]]:
    """``gate(target_port, hold_after)``: forwarders closed (threads joined) at teardown."""
    gates: list[Gate] = []

    def make(target_port: int, hold_after: int) -> Gate:
        gate = Gate(target_port, hold_after)
        gates.append(gate)
        return gate

    try:
        yield make
    finally:
        for gate in gates:
            gate.close()
