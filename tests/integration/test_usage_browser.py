"""The usage page (``/``) in a real browser: headless Chromium, in English and in Chinese.

``--dump-dom`` gives the DOM Chromium built, from which the tests read the text a reader sees;
``--screenshot`` saves a phone-sized picture of each language into tests/artifacts/ (kept, and
ignored by git) for people to look at. Chromium missing fails the test (scripts/test.sh
installs chromium and fonts-wqy-microhei).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.browser import Chromium, Page, png_size
from tests.harness.engines import engine_env, missing_tools, run
from tests.harness.ports import free_port
from tests.harness.proxy import ProxyProcess, StartProxy

pytestmark = pytest.mark.daemons

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WINDOW = (412, 2000)  # a phone's width; tall enough for the pull and mirror sections
CLIENT_SECTIONS = ("docker", "containerd", "podman", "k3s", "kind")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    problem = missing_tools("chromium", "fc-list")
    if problem:
        pytest.fail(problem, pytrace=False)
    workdir = tmp_path_factory.mktemp("chromium")
    fonts = run(["fc-list", ":lang=zh", "family"], env=engine_env(workdir)).stdout
    if not fonts.strip():
        pytest.fail("no font covers Chinese: apt-get install fonts-wqy-microhei", pytrace=False)
    return Chromium(workdir)


@pytest.fixture
def usage_proxy(start_proxy: StartProxy) -> ProxyProcess:
    """A proxy with three registries and two host routes; the upstreams are never contacted
    (rendering the page needs none), so they are closed loopback ports."""
    port = free_port()
    hub, ghcr, quay = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
    return start_proxy(
        "--no-presets",
        "--registry",
        f"docker.io={hub}",
        "--registry",
        f"ghcr.io={ghcr}",
        "--registry",
        f"quay.io={quay}",
        "--route",
        f"localhost:{port}=quay.io",
        "--route",
        f"ghcr.localhost:{port}=ghcr.io",
        port=port,
    )


def assert_usage_page(page: Page, proxy: ProxyProcess) -> None:
    """What every language shows: this host filled in, every client's section."""
    host = proxy.host
    assert page.title.startswith(f"{host} · "), page.title
    assert f"docker pull {host}/library/alpine:3.20" in page.text
    assert f"docker pull {host}/ghcr.io/owner/image:tag" in page.text
    assert f"docker pull {host}/quay.io/owner/image:tag" in page.text
    assert f'"registry-mirrors": ["http://{host}"]' in page.text  # daemon.json
    assert f'"insecure-registries": ["{host}"]' in page.text
    assert f'[host."http://{host}"]' in page.text  # containerd hosts.toml
    assert f'location = "{host}/quay.io"' in page.text  # podman registries.conf
    assert f"localhost:{proxy.port}" in page.text and f"ghcr.localhost:{proxy.port}" in page.text
    assert set(CLIENT_SECTIONS) <= page.ids, page.ids
    for title in ("Docker", "containerd", "Podman / CRI-O", "k3s", "kind"):
        assert title in page.headings, page.headings
    for path in (
        "/etc/docker/daemon.json",
        "/etc/containerd/certs.d/docker.io/hosts.toml",
        "/etc/containers/registries.conf",
        "/etc/rancher/k3s/registries.yaml",
        "kind create cluster",
    ):
        assert path in page.text, path
    assert "mirror.example.com" not in page.text  # the real host, not the placeholder


def assert_english(page: Page) -> None:
    assert page.lang == "en", page.lang
    assert "Docker registry mirror" in page.headings
    assert "Use it as a registry mirror" in page.headings
    assert "Put" in page.text and "in front of the image name" in page.text
    assert "镜像" not in page.text.replace("中文", "")


def assert_chinese(page: Page) -> None:
    assert page.lang == "zh-CN", page.lang
    assert "Docker 镜像加速" in page.headings
    assert "配置为镜像加速器" in page.headings
    assert "通过镜像站拉取" in page.headings
    assert "在镜像名前加上" in page.text
    assert "Use it as a registry mirror" not in page.text


def assert_screenshot(path: Path) -> None:
    assert path.is_file(), f"no screenshot at {path}"
    assert path.stat().st_size > 20_000, f"{path} is only {path.stat().st_size} bytes"
    assert png_size(path) == WINDOW


def test_usage_page_in_both_languages(chromium: Chromium, usage_proxy: ProxyProcess) -> None:
    """English by default, Chinese and back through the page's own language links."""
    home = f"{usage_proxy.url}/"
    english = chromium.load(home, screenshot=ARTIFACTS / "usage-en.png", window_size=WINDOW)
    assert_usage_page(english, usage_proxy)
    assert_english(english)
    assert_screenshot(ARTIFACTS / "usage-en.png")

    to_chinese = english.link(hreflang="zh-CN")
    assert to_chinese == f"{home}?lang=zh"
    chinese = chromium.load(to_chinese, screenshot=ARTIFACTS / "usage-zh.png", window_size=WINDOW)
    assert_usage_page(chinese, usage_proxy)
    assert_chinese(chinese)
    assert_screenshot(ARTIFACTS / "usage-zh.png")

    back = chinese.link(hreflang="en")
    assert back == f"{home}?lang=en"
    assert_english(chromium.load(back))


def test_usage_page_follows_the_browsers_accept_language(
    chromium: Chromium, usage_proxy: ProxyProcess
) -> None:
    """With no ``?lang=``, the browser's languages choose. ``--accept-lang`` is an ordered list
    Chromium turns into q-values (``fr-FR,zh-CN,en-US`` is sent as ``fr-FR,fr;q=0.9,
    zh-CN;q=0.8,zh;q=0.7,en-US;q=0.6,en;q=0.5``); the first supported language wins.
    (``--lang`` only sets headless Chromium's UI language, not the header.)"""
    page = chromium.load(f"{usage_proxy.url}/", args=("--accept-lang=fr-FR,zh-CN,en-US",))
    assert_usage_page(page, usage_proxy)
    assert_chinese(page)
    page = chromium.load(f"{usage_proxy.url}/", args=("--accept-lang=fr-FR,en-US,zh-CN",))
    assert_english(page)
