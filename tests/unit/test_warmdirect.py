"""The configuration `dockerproxy warm --cache-dir` runs the proxy's code with."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockerproxy.warmdirect import LOOPBACK, DirectError, direct_config


def test_only_a_loopback_listener_no_admin_no_schedule(tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        'listen = ["tcp:80"]\nupstream = "http://127.0.0.1:5999"\npresets = false\n'
        '[admin]\nlisten = ["tcp:9000:interface=127.0.0.1"]\n'
        '[[warm]]\nimages = ["alpine:3.20"]\n'
    )
    config = direct_config(str(config_file), str(tmp_path / "cache"))
    assert config.listen == (LOOPBACK,)
    assert config.admin.listen == () and config.warm == ()
    assert config.cache.directory == str(tmp_path / "cache")
    assert config.default is not None and config.default.url == "http://127.0.0.1:5999"


def test_a_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text("[cache]\nmax_size = 'lots'\n")
    with pytest.raises(DirectError, match=r"^--config: .*max_size"):
        direct_config(str(config_file), str(tmp_path / "cache"))
