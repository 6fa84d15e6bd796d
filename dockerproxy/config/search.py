"""C{docker search}: C{[search]} and C{--search-upstream}.

The index answering C{GET /v1/search} is a configured upstream like the registries:
Docker Hub's index by default, none with the presets turned off (C{--no-presets}
means the proxy contacts only what is configured), and none with
C{[search] enabled = false}. Without one, C{/v1/search} is a 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockerproxy.config.checks import check_bool, check_table
from dockerproxy.config.settings import SearchSettings, UpstreamConfig
from dockerproxy.config.upstreams import make_upstream

OPTION = "--search-upstream"
DOCKER_HUB_INDEX = "https://index.docker.io"
_KEYS = {"upstream", "enabled"}


def search_config(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> SearchSettings:
    table = toml.get("search", {})
    table = check_table("search", table, _KEYS)
    if cli.get("search_upstream") is not None:
        return SearchSettings(_index(OPTION, cli["search_upstream"]))
    if not check_bool("search.enabled", table.get("enabled", True)):
        return SearchSettings()
    if "upstream" in table:
        return SearchSettings(_index("search.upstream", table["upstream"]))
    presets = toml.get("presets", True) is not False and cli.get("presets") is not False
    return SearchSettings(_index("search.upstream", DOCKER_HUB_INDEX) if presets else None)


def _index(key: str, url: Any) -> UpstreamConfig:
    return make_upstream(key, url, library_prefix=False, short=True)
