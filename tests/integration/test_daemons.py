"""Real container engines pull through a real dockerproxy, configured as users configure them.

dockerd (``--registry-mirror`` and the proxy host as an image prefix), podman (a registries.conf
mirror and a path prefix) and containerd + ctr (hosts.toml mirrors, hence containerd's ``?ns=``)
each run with all their state in a temporary directory, on 127.0.0.1 only. The proxy's
docker.io is the session's token-auth ``upstream`` (the default, with ``library/``) and its
quay.io the ``plain_upstream`` without auth. Nothing may reach the real registries: every pull
must be served by the proxy, which its access log shows, and every digest must be the upstream's.

A missing engine fails (never skips) the test: scripts/test.sh installs docker.io, containerd
and podman.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.harness.daemons import (
    Containerd,
    Dockerd,
    Podman,
    make_podman,
    mirror_registries_conf,
    start_containerd,
    start_dockerd,
)
from tests.harness.engines import Result, missing_tools
from tests.harness.images import ImageRecord, IndexRecord
from tests.harness.ports import free_port
from tests.harness.proxy import ProxyProcess, StartProxy
from tests.harness.upstream import LogMark, Upstream

pytestmark = pytest.mark.daemons

PROXY_AGENT = "dockerproxy/"


# -- the proxy's access log ---------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One access-log event of the proxy."""

    method: str
    target: str  # path with query, as the client sent it
    status: int
    upstream: str

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def ns(self) -> str | None:
        values = parse_qs(urlsplit(self.target).query).get("ns")
        return values[0] if values else None

    def __str__(self) -> str:
        return f"{self.method} {self.target} {self.status} {self.upstream}"


def accesses(proxy: ProxyProcess, since: int = 0) -> list[Access]:
    """The proxy's access-log events from index ``since`` on (``--log-format json``)."""
    proxy.proc.wait_log_quiet(0.2)
    return [
        Access(str(e["method"]), str(e["path"]), int(str(e["status"])), str(e["upstream"]))
        for e in proxy.access_events()[since:]
    ]


def show(seen: list[Access]) -> str:
    return "proxy access log:\n" + "\n".join(f"  {a}" for a in seen)


def assert_served(
    seen: list[Access], method: str, path: str, upstream: Upstream, ns: str | None = None
) -> None:
    """The proxy answered ``method path`` with 200 from ``upstream`` (and containerd's ns)."""
    hits = [
        a
        for a in seen
        if a.method == method
        and a.path == path
        and a.status == 200
        and a.upstream == upstream.url
        and a.ns == ns
    ]
    assert hits, f"no 200 for {method} {path} (ns={ns}) from {upstream.url}\n{show(seen)}"


def assert_blobs_served(
    seen: list[Access],
    repository: str,
    image: ImageRecord,
    upstream: Upstream,
    ns: str | None = None,
) -> None:
    for digest in image.blob_digests:
        assert_served(seen, "GET", f"/v2/{repository}/blobs/{digest}", upstream, ns)


def assert_upstream_saw_proxy(upstream: Upstream, mark: LogMark, repository: str) -> None:
    """The upstream registry was asked for ``repository``'s manifests, by the proxy only."""
    manifests = [
        r for r in upstream.responses(mark) if r.path.startswith(f"/v2/{repository}/manifests/")
    ]
    assert manifests, f"the upstream never saw /v2/{repository}/manifests/"
    assert all(r.user_agent.startswith(PROXY_AGENT) for r in manifests), manifests


# -- fixtures -------------------------------------------------------------------------------------


def require(*tools: str) -> None:
    problem = missing_tools(*tools)
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def hub_proxy(
    start_proxy: StartProxy, upstream: Upstream, plain_upstream: Upstream
) -> ProxyProcess:
    """docker.io (the default, with library/) is ``upstream``; quay.io is ``plain_upstream``.

    Started first, on a port chosen here: dockerd needs the mirror's address at start.
    """
    return start_proxy(
        "--no-presets",
        "--registry",
        f"docker.io={upstream.url}",
        "--registry",
        f"quay.io={plain_upstream.url}",
        "--log-format",
        "json",
        port=free_port(),
    )


@pytest.fixture
def dockerd(hub_proxy: ProxyProcess, tmp: Path) -> Iterator[Dockerd]:
    """A fresh dockerd (dockerd caches manifests in its data root) using the proxy as mirror."""
    require("dockerd", "docker")
    engine = start_dockerd(tmp / "dockerd", mirrors=[hub_proxy.url], insecure=[hub_proxy.host])
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def podman(hub_proxy: ProxyProcess, tmp: Path) -> Iterator[Podman]:
    """podman with the proxy as the only docker.io mirror, an empty auth file, vfs storage."""
    require("podman")
    engine = make_podman(tmp / "podman", mirror_registries_conf({"docker.io": hub_proxy.host}))
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def containerd(tmp: Path) -> Iterator[Containerd]:
    require("containerd", "ctr")
    engine = start_containerd(tmp / "containerd")
    try:
        yield engine
    finally:
        engine.stop()


# -- dockerd --------------------------------------------------------------------------------------


def docker_pull(dockerd: Dockerd, proxy: ProxyProcess, ref: str) -> Result:
    """``docker pull REF``; a failure quotes dockerd's log and the proxy's access log."""
    result = dockerd.docker("pull", ref, check=False)
    assert result.returncode == 0, (
        f"{result.describe()}\n{dockerd.log_tail()}\n{show(accesses(proxy))}"
    )
    return result


def pull_attempts(dockerd: Dockerd, since: int) -> list[str]:
    """dockerd's debug lines naming the endpoints it pulled from."""
    return re.findall(r'msg="(Trying to pull [^"]*)"', dockerd.log_text(since))


def test_docker_pulls_through_the_registry_mirror(
    dockerd: Dockerd, hub_proxy: ProxyProcess, upstream: Upstream
) -> None:
    """``docker pull alpine:3.20`` goes to the mirror as library/alpine, never to Docker Hub."""
    alpine, hello = upstream.images["alpine"], upstream.images["docker"]
    assert isinstance(alpine, ImageRecord) and isinstance(hello, ImageRecord)
    mark, since, log_mark = upstream.log_mark(), len(accesses(hub_proxy)), dockerd.log_mark()

    docker_pull(dockerd, hub_proxy, "alpine:3.20")
    assert dockerd.repo_digests("alpine:3.20") == [f"alpine@{alpine.manifest_digest}"]
    assert dockerd.image_id("alpine:3.20") == alpine.config.digest

    seen = accesses(hub_proxy, since)
    # A ping without credentials comes first, answered with the proxy's own challenge.
    assert (seen[0].method, seen[0].target, seen[0].status) == ("GET", "/v2/", 401), show(seen)
    assert any(
        a.path == "/v2/auth"
        and "repository%3Alibrary%2Falpine%3Apull" in a.target
        and a.status == 200
        for a in seen
    ), show(seen)
    assert_served(seen, "HEAD", "/v2/library/alpine/manifests/3.20", upstream)
    assert_served(seen, "GET", f"/v2/library/alpine/manifests/{alpine.manifest_digest}", upstream)
    assert_blobs_served(seen, "library/alpine", alpine, upstream)
    assert all(a.ns is None for a in seen), show(seen)
    assert_upstream_saw_proxy(upstream, mark, "library/alpine")

    # A Docker schema 2 image: dockerd's six Accept lines must all reach the upstream.
    docker_pull(dockerd, hub_proxy, "hello:1")
    assert dockerd.repo_digests("hello:1") == [f"hello@{hello.manifest_digest}"]
    assert dockerd.image_id("hello:1") == hello.config.digest

    attempts = pull_attempts(dockerd, log_mark)
    assert attempts and all(f"from {hub_proxy.url}/ " in line for line in attempts), attempts
    assert "registry-1.docker.io" not in dockerd.log_text(log_mark)


def test_docker_pulls_with_the_proxy_as_image_prefix(
    dockerd: Dockerd, hub_proxy: ProxyProcess, upstream: Upstream, plain_upstream: Upstream
) -> None:
    """``docker pull HOST/library/alpine:3.20`` and, by path prefix, ``HOST/quay.io/...``."""
    alpine, plain = upstream.images["alpine"], plain_upstream.images["plain"]
    assert isinstance(alpine, ImageRecord) and isinstance(plain, ImageRecord)
    host = hub_proxy.host
    mark, since, log_mark = upstream.log_mark(), len(accesses(hub_proxy)), dockerd.log_mark()

    docker_pull(dockerd, hub_proxy, f"{host}/library/alpine:3.20")
    assert dockerd.repo_digests(f"{host}/library/alpine:3.20") == [
        f"{host}/library/alpine@{alpine.manifest_digest}"
    ]
    assert dockerd.image_id(f"{host}/library/alpine:3.20") == alpine.config.digest
    seen = accesses(hub_proxy, since)
    assert (seen[0].method, seen[0].target, seen[0].status) == ("GET", "/v2/", 401), show(seen)
    assert_served(seen, "HEAD", "/v2/library/alpine/manifests/3.20", upstream)
    assert_blobs_served(seen, "library/alpine", alpine, upstream)
    assert_upstream_saw_proxy(upstream, mark, "library/alpine")

    since = len(accesses(hub_proxy))
    docker_pull(dockerd, hub_proxy, f"{host}/quay.io/library/plain:1")
    assert dockerd.repo_digests(f"{host}/quay.io/library/plain:1") == [
        f"{host}/quay.io/library/plain@{plain.manifest_digest}"
    ]
    seen = accesses(hub_proxy, since)
    assert_served(seen, "HEAD", "/v2/quay.io/library/plain/manifests/1", plain_upstream)
    assert_blobs_served(seen, "quay.io/library/plain", plain, plain_upstream)

    # Plain HTTP only after dockerd's HTTPS attempt, which the proxy refuses at once.
    attempts = pull_attempts(dockerd, log_mark)
    assert any(f"from http://{host} " in line for line in attempts), attempts
    assert "registry-1.docker.io" not in dockerd.log_text(log_mark)


# -- podman ---------------------------------------------------------------------------------------


def podman_urls(result: Result) -> list[str]:
    """Every URL podman requested (its debug log has one ``GET URL`` line per request)."""
    return re.findall(r'msg="(?:GET|HEAD) (\S+)"', result.stderr)


def test_podman_pulls_through_a_registries_conf_mirror(
    podman: Podman, hub_proxy: ProxyProcess, upstream: Upstream
) -> None:
    alpine = upstream.images["alpine"]
    assert isinstance(alpine, ImageRecord)
    mark, since = upstream.log_mark(), len(accesses(hub_proxy))

    result = podman("pull", "docker.io/library/alpine:3.20", debug=True)
    assert podman.digest("docker.io/library/alpine:3.20") == alpine.manifest_digest

    # Only the mirror was tried, and every request went to it.
    tried = re.findall(r'Trying to access \\"([^"\\]+)\\"', result.stderr)
    assert tried == [f"{hub_proxy.host}/library/alpine:3.20"], result.describe()
    urls = podman_urls(result)
    assert urls and all(urlsplit(url).netloc == hub_proxy.host for url in urls), urls

    seen = accesses(hub_proxy, since)
    assert (seen[0].method, seen[0].target, seen[0].status) == ("GET", "/v2/", 401), show(seen)
    assert_served(seen, "GET", "/v2/library/alpine/manifests/3.20", upstream)
    assert_blobs_served(seen, "library/alpine", alpine, upstream)
    assert_upstream_saw_proxy(upstream, mark, "library/alpine")


def test_podman_pulls_with_a_registry_path_prefix(
    podman: Podman, hub_proxy: ProxyProcess, plain_upstream: Upstream
) -> None:
    plain = plain_upstream.images["plain"]
    assert isinstance(plain, ImageRecord)
    mark, since = plain_upstream.log_mark(), len(accesses(hub_proxy))
    ref = f"{hub_proxy.host}/quay.io/library/plain:1"

    result = podman("pull", "--tls-verify=false", ref, debug=True)
    assert podman.digest(ref) == plain.manifest_digest
    urls = podman_urls(result)
    assert urls and all(urlsplit(url).netloc == hub_proxy.host for url in urls), urls

    seen = accesses(hub_proxy, since)
    assert_served(seen, "GET", "/v2/quay.io/library/plain/manifests/1", plain_upstream)
    assert_blobs_served(seen, "quay.io/library/plain", plain, plain_upstream)
    assert_upstream_saw_proxy(plain_upstream, mark, "library/plain")


# -- containerd -----------------------------------------------------------------------------------


def ctr_urls(result: Result) -> list[str]:
    """Every URL ctr requested while resolving (``ctr --debug``: ``do request ... url=...``)."""
    return [
        m.strip('"') for m in re.findall(r'msg="do request".* url=("[^"]*"|\S+)', result.stderr)
    ]


def test_containerd_pulls_through_hosts_toml_mirrors(
    containerd: Containerd, hub_proxy: ProxyProcess, upstream: Upstream, plain_upstream: Upstream
) -> None:
    """One mirror for docker.io and quay.io: containerd names the registry with ``?ns=``."""
    alpine, multiarch = upstream.images["alpine"], upstream.images["multiarch"]
    plain = plain_upstream.images["plain"]
    assert isinstance(alpine, ImageRecord) and isinstance(multiarch, IndexRecord)
    assert isinstance(plain, ImageRecord)
    hosts = containerd.write_hosts(
        {"docker.io": "https://registry-1.docker.io", "quay.io": "https://quay.io"}, hub_proxy.url
    )

    def pull(ref: str) -> tuple[Result, list[Access]]:
        since = len(accesses(hub_proxy))
        result = containerd.ctr(
            "images", "pull", "--hosts-dir", str(hosts), ref, debug=True, check=False
        )
        assert result.returncode == 0, (
            f"{result.describe()}\n{containerd.log_tail()}\n{show(accesses(hub_proxy, since))}"
        )
        urls = ctr_urls(result)
        assert urls and all(url.startswith(f"{hub_proxy.url}/v2/") for url in urls), urls
        return result, accesses(hub_proxy, since)

    mark = upstream.log_mark()
    _, hub = pull("docker.io/library/alpine:3.20")
    # containerd never pings /v2/: its first request is a HEAD of the manifest, challenged there.
    first = hub[0]
    assert (first.method, first.path, first.ns, first.status) == (
        "HEAD",
        "/v2/library/alpine/manifests/3.20",
        "docker.io",
        401,
    ), show(hub)
    assert not any(a.path == "/v2/" for a in hub), show(hub)
    assert all(a.ns == "docker.io" for a in hub), show(hub)
    assert any(a.path == "/v2/auth" and a.status == 200 for a in hub), show(hub)
    assert_served(hub, "HEAD", "/v2/library/alpine/manifests/3.20", upstream, "docker.io")
    assert_blobs_served(hub, "library/alpine", alpine, upstream, "docker.io")
    assert_upstream_saw_proxy(upstream, mark, "library/alpine")

    # A multi-platform index: the index by tag, then this platform's manifest by digest.
    _, index = pull("docker.io/public/multiarch:1")
    assert all(a.ns == "docker.io" for a in index), show(index)
    platform = [
        m
        for m in multiarch.manifests
        if any(
            a.path == f"/v2/public/multiarch/manifests/{m.manifest_digest}" and a.status == 200
            for a in index
        )
    ]
    assert len(platform) == 1, show(index)
    assert_blobs_served(index, "public/multiarch", platform[0], upstream, "docker.io")

    _, quay = pull("quay.io/library/plain:1")
    assert (quay[0].method, quay[0].path, quay[0].ns) == (
        "HEAD",
        "/v2/library/plain/manifests/1",
        "quay.io",
    ), show(quay)
    assert all(a.ns == "quay.io" for a in quay), show(quay)
    assert_served(quay, "HEAD", "/v2/library/plain/manifests/1", plain_upstream, "quay.io")
    assert_blobs_served(quay, "library/plain", plain, plain_upstream, "quay.io")

    images = containerd.images()
    assert images == {
        "docker.io/library/alpine:3.20": alpine.manifest_digest,
        "docker.io/public/multiarch:1": multiarch.manifest_digest,
        "quay.io/library/plain:1": plain.manifest_digest,
    }
