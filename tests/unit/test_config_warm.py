"""[[warm]]: images, platforms and interval, each bad value a one-line error naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from dockerproxy.config import ConfigError, build_config
from dockerproxy.config.show import show_settings
from dockerproxy.config.warm import DEFAULT_INTERVAL, WarmEntry, check_interval
from dockerproxy.imagerefs import ImageRef, Platform


def error(warm: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build_config({"warm": warm}, {})
    return caught.value


def test_entries_with_defaults_and_every_setting() -> None:
    config = build_config(
        {
            "warm": [
                {"images": ["alpine:3.20", "ghcr.io/acme/app:1"]},
                {
                    "images": ["docker.io/library/nginx"],
                    "platforms": ["linux/arm64", "linux/arm/v7"],
                    "interval": "15m",
                },
                {"images": ["busybox:1"], "platforms": "all", "interval": 90},
            ]
        },
        {},
    )
    assert config.warm == (
        WarmEntry(
            (ImageRef("alpine", "3.20"), ImageRef("ghcr.io/acme/app", "1")),
            (Platform("linux", "amd64"),),
            DEFAULT_INTERVAL,
        ),
        WarmEntry(
            (ImageRef("docker.io/library/nginx", "latest"),),
            (Platform("linux", "arm64"), Platform("linux", "arm", "v7")),
            900.0,
        ),
        WarmEntry((ImageRef("busybox", "1"),), None, 90.0),
    )
    assert build_config({}, {}).warm == ()


def test_check_config_shows_each_entry_by_its_index() -> None:
    config = build_config({"warm": [{"images": ["alpine:3.20"], "interval": "1h"}]}, {})
    lines = [line for line in show_settings(config) if line.startswith("warm")]
    assert lines == [
        'warm[0].images = ["alpine:3.20"]',
        'warm[0].platforms = ["linux/amd64"]',
        "warm[0].interval = 3600.0",
    ]


@pytest.mark.parametrize(
    ("warm", "key", "words"),
    [
        ({"images": ["alpine"]}, "warm", "array of tables"),
        ([{"images": ["alpine"]}, {"images": []}], "warm[1].images", "list of images"),
        ([{"images": "alpine"}], "warm[0].images", "list of images"),
        ([{"images": ["Alpine:3"]}], "warm[0].images", "'Alpine:3'"),
        ([{"images": ["alpine:bad tag"]}], "warm[0].images", "bad tag"),
        ([{"images": ["alpine@sha256:12"]}], "warm[0].images", "bad digest"),
        ([{"images": ["a"], "platforms": ["linux"]}], "warm[0].platforms", "'linux'"),
        ([{"images": ["a"], "platforms": "any"}], "warm[0].platforms", '"all"'),
        ([{"images": ["a"], "interval": 0.5}], "warm[0].interval", "from 1 s"),
        ([{"images": ["a"], "interval": "often"}], "warm[0].interval", "'often'"),
        ([{"images": ["a"], "interval": True}], "warm[0].interval", "True"),
        ([{"images": ["a"], "every": 5}], "warm[0].every", "unknown setting"),
        ([{"images": ["a"] * 1001}], "warm", "more than 1000"),
    ],
)
def test_bad_entries_name_their_key(warm: Any, key: str, words: str) -> None:
    e = error(warm)
    assert e.key == key
    assert words in e.problem


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1, 1.0),
        (2.5, 2.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("15m", 900.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
        (" 2H ", 7200.0),
    ],
)
def test_intervals(value: Any, seconds: float) -> None:
    assert check_interval("k", value) == seconds


def test_interval_bounds() -> None:
    assert check_interval("k", "30d") == 30 * 86400.0
    with pytest.raises(ConfigError, match="got '31d'"):
        check_interval("k", "31d")
