"""``docker login`` and ``podman login`` to a real dockerproxy whose clients log in, then
pulls through it from the real token-auth registry; wrong passwords and anonymous pulls are
refused. dockerd and podman keep all their state in temporary directories (see
tests.harness.daemons); the proxy is the image prefix (``HOST/library/alpine:3.20``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.authproxy import ALICE, AuthProxy
from tests.harness.daemons import Dockerd, Podman, make_podman, start_dockerd
from tests.harness.engines import missing_tools
from tests.harness.images import ImageRecord
from tests.harness.proxy import StartProxy
from tests.harness.upstream import Upstream

pytestmark = pytest.mark.daemons


def require(*tools: str) -> None:
    problem = missing_tools(*tools)
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def auth_proxy(start_proxy: StartProxy, upstream: Upstream, tmp: Path) -> AuthProxy:
    return AuthProxy(start_proxy, upstream, tmp / "proxy", "--log-format", "json")


@pytest.fixture
def dockerd(auth_proxy: AuthProxy, tmp: Path) -> Iterator[Dockerd]:
    require("dockerd", "docker")
    engine = start_dockerd(tmp / "dockerd", insecure=[auth_proxy.proxy.host])
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def podman(tmp: Path) -> Iterator[Podman]:
    require("podman")
    engine = make_podman(tmp / "podman")
    try:
        yield engine
    finally:
        engine.stop()


def test_docker_login_then_pull(
    dockerd: Dockerd, auth_proxy: AuthProxy, upstream: Upstream
) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    host = auth_proxy.proxy.host
    ref = f"{host}/library/alpine:3.20"

    anonymous = dockerd.docker("pull", ref, check=False)
    assert anonymous.returncode != 0, anonymous.describe()
    assert "unauthorized" in anonymous.stderr.lower() or "denied" in anonymous.stderr.lower()

    wrong = dockerd.docker("login", "-u", "alice", "-p", "not-her-password", host, check=False)
    assert wrong.returncode != 0, wrong.describe()
    assert "unauthorized" in (wrong.stderr + wrong.stdout).lower(), wrong.describe()

    login = dockerd.docker("login", "-u", ALICE[0], "-p", ALICE[1], host, check=False)
    assert login.returncode == 0, f"{login.describe()}\n{dockerd.log_tail()}"
    assert "Login Succeeded" in login.stdout

    pulled = dockerd.docker("pull", ref, check=False)
    assert pulled.returncode == 0, f"{pulled.describe()}\n{dockerd.log_tail()}"
    assert dockerd.repo_digests(ref) == [f"{host}/library/alpine@{alpine.manifest_digest}"]
    assert dockerd.image_id(ref) == alpine.config.digest
    assert ALICE[1] not in auth_proxy.proxy.log_text()


def test_podman_login_then_pull(podman: Podman, auth_proxy: AuthProxy, upstream: Upstream) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    host = auth_proxy.proxy.host
    ref = f"{host}/library/alpine:3.20"

    anonymous = podman("pull", "--tls-verify=false", ref, check=False)
    assert anonymous.returncode != 0, anonymous.describe()

    wrong = podman("login", "--tls-verify=false", "-u", "alice", "-p", "nope", host, check=False)
    assert wrong.returncode != 0, wrong.describe()

    login = podman("login", "--tls-verify=false", "-u", ALICE[0], "-p", ALICE[1], host,
                   check=False)  # fmt: skip
    assert login.returncode == 0, login.describe()
    podman("pull", "--tls-verify=false", ref)
    assert podman.digest(ref) == alpine.manifest_digest

    # A static token is a password too.
    podman("logout", host)
    login = podman("login", "--tls-verify=false", "-u", "ci", "-p", auth_proxy.ci_token, host,
                   check=False)  # fmt: skip
    assert login.returncode == 0, login.describe()
    podman("pull", "--tls-verify=false", f"{host}/library/hello:1")
