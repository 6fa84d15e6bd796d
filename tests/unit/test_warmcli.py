"""dockerproxy warm's arguments and its run against a registry in memory (the installed
command against a real proxy is tests/integration/test_warm.py)."""

from __future__ import annotations

import argparse
from io import StringIO
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from dockerproxy import cli
from dockerproxy.imagerefs import DEFAULT_PLATFORMS, ImageRef, Platform
from dockerproxy.warmcli import (
    RichProgress,
    UsageError,
    basic_of,
    images_of,
    listener_url,
    parser,
    platforms_of,
    proxy_of,
    warm_images,
)
from dockerproxy.warming import Outcome
from tests.unit.fakeregistry import BASE, FakeRegistry


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


def test_images_from_arguments_and_files_once_each(tmp_path: Path) -> None:
    listed = tmp_path / "images.txt"
    listed.write_text("# base images\nalpine:3.20\nghcr.io/acme/app:1  # the app\n\n")
    images = images_of(args("alpine:3.20", "busybox", "--file", str(listed)))
    assert images == [
        ImageRef("alpine", "3.20"),
        ImageRef("busybox", "latest"),
        ImageRef("ghcr.io/acme/app", "1"),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "no images"),
        (("--file", "/nonexistent/list"), "--file: cannot read /nonexistent/list"),
        (("Alpine",), "'Alpine'"),
    ],
)
def test_bad_images(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        images_of(args(*argv))


def test_platforms() -> None:
    assert platforms_of(args("a")) == DEFAULT_PLATFORMS
    assert platforms_of(args("a", "--all-platforms")) is None
    assert platforms_of(args("a", "--platform", "linux/arm64", "--platform", "linux/arm/v7")) == (
        Platform("linux", "arm64"),
        Platform("linux", "arm", "v7"),
    )
    with pytest.raises(UsageError, match="exclude each other"):
        platforms_of(args("a", "--platform", "linux/arm64", "--all-platforms"))
    with pytest.raises(UsageError, match="--platform: "):
        platforms_of(args("a", "--platform", "arm64"))


def test_the_proxy_from_the_option_the_config_or_the_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('listen = ["tcp:5001:interface=0.0.0.0", "tcp:5002"]\n')
    assert proxy_of(args("a", "--proxy", "https://mirror.test/"), {}) == "https://mirror.test"
    assert proxy_of(args("a", "--config", str(config)), {}) == "http://127.0.0.1:5001"
    assert proxy_of(args("a"), {"DOCKERPROXY_CONFIG": str(config)}) == "http://127.0.0.1:5001"
    assert proxy_of(args("a"), {}) == "http://127.0.0.1:5000"
    with pytest.raises(UsageError, match="--proxy: must be an http"):
        proxy_of(args("a", "--proxy", "mirror.test"), {})
    with pytest.raises(UsageError, match="--config: cannot read"):
        proxy_of(args("a", "--config", str(tmp_path / "missing.toml")), {})


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("tcp:5000", "http://127.0.0.1:5000"),
        ("tcp:port=5000", "http://127.0.0.1:5000"),
        ("tcp:8080:interface=10.1.2.3", "http://10.1.2.3:8080"),
        ("tcp6:5000:interface=\\:\\:", None),
        ("ssl:443:privateKey=k.pem:certKey=c.pem", "https://127.0.0.1:443"),
        ("unix:/run/dockerproxy.sock", None),
        ("systemd:domain=INET:index=0", None),
    ],
)
def test_listener_urls(listen: str, url: str | None) -> None:
    if url is None:
        with pytest.raises(UsageError, match="give --proxy"):
            listener_url(listen)
    else:
        assert listener_url(listen) == url


def test_a_login_takes_the_password_from_the_environment() -> None:
    assert basic_of(args("a"), {"DOCKERPROXY_PASSWORD": "pw"}) is None
    assert basic_of(args("a", "--username", "alice"), {"DOCKERPROXY_PASSWORD": "pw"}) == (
        b"Basic YWxpY2U6cHc="
    )


def test_usage_errors_exit_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["warm", "--proxy", "http://127.0.0.1:9", "Not An Image"]) == 2
    assert capsys.readouterr().err == (
        "dockerproxy warm: not an image name such as alpine:3.20 or ghcr.io/acme/app:1, "
        "got 'Not An Image'\n"
    )
    assert cli.main(["warm", "a", "--concurrency", "0"]) == 2
    assert "--concurrency: must be from 1 to 64" in capsys.readouterr().err


def test_each_image_is_reported_as_it_ends_and_a_failure_does_not_stop_the_others() -> None:
    registry = FakeRegistry()
    registry.image("library/app", "1", [b"one", b"two"])
    stub = registry.stub()
    reported: list[str] = []
    images = [ImageRef("library/nothing", "1"), ImageRef("library/app", "1")]
    result: list[list[Outcome]] = []
    Deferred.fromCoroutine(
        warm_images(
            stub, BASE, images, DEFAULT_PLATFORMS, 2, report=lambda o: reported.append(o.summary())
        )
    ).addCallback(result.append)
    stub.flush()
    assert [o.ok for o in result[0]] == [False, True]
    assert reported[0] == "failed library/nothing:1: manifest 1: 404 manifests unknown"
    assert reported[1].startswith("ok library/app:1: 1 manifests, 3 blobs, ")
    # One token per repository, from the anonymous login.
    logins = [s.path for s in registry.seen if s.path.startswith("/v2/auth")]
    assert len(logins) == 2


def test_no_terminal_no_bars() -> None:
    out = StringIO()
    assert not out.isatty()
    assert cli.main(["warm", "--proxy", "http://127.0.0.1:9", "Bad Image"], out=out) == 2


def test_the_bars_count_bytes_per_image() -> None:
    bars = RichProgress(StringIO())
    alpine, app = ImageRef("alpine", "3.20"), ImageRef("app", "1")
    bars.add_bytes(alpine, 100)
    bars.add_bytes(alpine, 50)
    bars.received(alpine, 120)
    bars.received(app, 7)
    tasks = {task.description: task for task in bars.bars.tasks}
    assert (tasks["alpine:3.20"].total, tasks["alpine:3.20"].completed) == (150, 120)
    assert tasks["app:1"].completed == 7
