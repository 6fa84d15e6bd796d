"""The status page (``/status`` on --admin-listen) in a real browser: headless Chromium, in
English and in Chinese, after real pulls through the proxy.

``--dump-dom`` gives the DOM Chromium built: the text a reader sees and the charts (inline
SVG: their paths must have been drawn); ``--screenshot`` saves a picture of each language into
tests/artifacts/ for people to look at. The page loads nothing from anywhere: the browser is
started with no network but loopback, and the DOM has no script.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness.browser import Chromium, Page, png_size
from tests.harness.caching import mirror_of
from tests.harness.engines import engine_env, missing_tools, run
from tests.harness.ports import HOST, free_port
from tests.harness.proxy import StartProxy
from tests.harness.pulls import copy
from tests.harness.upstream import Upstream

pytestmark = pytest.mark.daemons

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WINDOW = (1000, 2600)  # a laptop's width, tall enough for every section


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


def assert_status_page(page: Page, registry: str) -> None:
    assert "<script" not in page.dom
    # Requests, hit ratio, bytes; docker-registry sends no ratelimit-remaining, so the fourth
    # chart is a line saying so (the unit tests draw it).
    assert page.dom.count("<svg") == 3
    drawn = re.findall(r'<path d="(M[^"]+)"', page.dom)
    assert len(drawn) >= 3, "each chart has a line"
    assert f"{registry}/library/alpine" in page.text
    assert {"summary", "charts", "images", "fills", "cache", "upstreams"} <= page.ids
    assert not re.search(r'(src|href)="(https?:)?//', page.dom), "nothing from elsewhere"


def test_status_page_in_both_languages(
    chromium: Chromium, start_proxy: StartProxy, upstream: Upstream, tmp: Path
) -> None:
    port = free_port()
    proxy = mirror_of(
        start_proxy, upstream.url, tmp / "cache", "--admin-listen", f"tcp:{port}:interface={HOST}"
    )
    copy(proxy, "alpine:3.20", tmp / "cold")
    copy(proxy, "alpine:3.20", tmp / "warm")
    registry = upstream.url.removeprefix("http://")
    status = f"http://{HOST}:{port}/status"

    english = chromium.load(status, screenshot=ARTIFACTS / "status-en.png", window_size=WINDOW)
    assert english.lang == "en", english.lang
    assert "Mirror status" in english.headings
    for heading in ("Last 24 hours", "Minute by minute", "Images", "Cache", "Upstreams"):
        assert heading in english.headings, english.headings
    assert "Cache hit ratio" in english.text and "50.0%" in english.text
    assert "No upstream has sent a rate limit" in english.text
    assert_status_page(english, registry)

    chinese = chromium.load(
        english.link(hreflang="zh-CN"),
        screenshot=ARTIFACTS / "status-zh.png",
        window_size=WINDOW,
    )
    assert chinese.lang == "zh-CN", chinese.lang
    for heading in ("镜像状态", "最近 24 小时", "按分钟统计", "缓存", "上游"):
        assert heading in chinese.headings, chinese.headings
    assert "缓存命中率" in chinese.text
    assert_status_page(chinese, registry)

    for name in ("status-en.png", "status-zh.png"):
        path = ARTIFACTS / name
        assert path.stat().st_size > 20_000, f"{path} is only {path.stat().st_size} bytes"
        assert png_size(path) == WINDOW

    by_header = chromium.load(status, args=("--accept-lang=zh-CN,en-US",))
    assert by_header.lang == "zh-CN"
