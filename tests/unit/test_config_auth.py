"""C{[auth]}, C{--auth-htpasswd}, C{--auth-tokens}, C{--anonymous-pull} and C{--state-dir}
(L{dockerproxy.config.auth}): the files are read at config time, and every problem is one
line naming its key, the file and the line, and never a hash or a token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockerproxy.config import AuthSettings, ConfigError, build_config
from dockerproxy.statedir import default_state_dir
from dockerproxy.tap import Options

HTPASSWD = "alice:$2y$05$05ByAKTzPs19.Thm8Ow9LewB4MLMAksdToka2vd18L6/xpi6zAZdW\n"
TOKEN = "ci-token-0123456789abcdef"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def config_error(toml: dict[str, Any], cli: dict[str, Any] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build_config(toml, cli or {})
    return caught.value


@pytest.fixture
def htpasswd(tmp_path: Path) -> str:
    return write(tmp_path, "htpasswd", HTPASSWD)


@pytest.fixture
def tokens(tmp_path: Path) -> str:
    return write(tmp_path, "tokens.toml", f'ci = "{TOKEN}"\n')


def test_off_by_default() -> None:
    auth = build_config({}, {}).auth
    assert auth == AuthSettings()
    assert not auth.enabled
    assert (auth.fail_delay, auth.token_ttl) == (1.0, 300.0)


def test_auth_table_reads_both_files(htpasswd: str, tokens: str) -> None:
    auth = build_config(
        {
            "auth": {
                "htpasswd": htpasswd,
                "tokens": tokens,
                "anonymous_pull": ["docker.io/library/*"],
                "fail_delay": 0.5,
                "token_ttl": 60,
                "admins": ["alice"],
            }
        },
        {},
    ).auth
    assert auth.enabled
    assert (auth.htpasswd, auth.tokens) == (htpasswd, tokens)
    assert set(auth.users) == {"alice"}
    assert auth.static_tokens == {"ci": TOKEN}
    assert [p.text for p in auth.anonymous_pull] == ["docker.io/library/*"]
    assert (auth.fail_delay, auth.token_ttl, auth.admins) == (0.5, 60.0, ("alice",))
    assert auth.knows("alice") and auth.knows("ci") and not auth.knows("bob")


def test_options_win_over_the_table(htpasswd: str, tokens: str, tmp_path: Path) -> None:
    other = write(tmp_path, "other", "")
    options = Options()
    options.parseOptions(
        [
            "--auth-htpasswd", htpasswd,
            "--auth-tokens", tokens,
            "--anonymous-pull", "docker.io/library/*",
            "--anonymous-pull", "ghcr.io/acme/**",
            "--state-dir", str(tmp_path / "state"),
            "--config", write(
                tmp_path,
                "c.toml",
                f'state_dir = "/elsewhere"\n[auth]\nhtpasswd = "{other}"\n'
                'anonymous_pull = ["quay.io/*"]\n',
            ),
        ]
    )  # fmt: skip
    config = options.config
    assert config.auth.htpasswd == htpasswd and set(config.auth.users) == {"alice"}
    assert [p.text for p in config.auth.anonymous_pull] == [
        "docker.io/library/*",
        "ghcr.io/acme/**",
    ]
    assert config.state_dir == str(tmp_path / "state")


def test_secrets_stay_out_of_reprs(htpasswd: str, tokens: str) -> None:
    config = build_config({"auth": {"htpasswd": htpasswd, "tokens": tokens}}, {})
    assert TOKEN not in repr(config)
    assert "$2y$" not in repr(config)


def test_state_dir_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/dockerproxy:/x"}) == (
        "/var/lib/dockerproxy"
    )
    assert default_state_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == "/s/dockerproxy"
    monkeypatch.setenv("HOME", "/home/op")
    assert default_state_dir({}) == "/home/op/.local/state/dockerproxy"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/dp")
    assert build_config({}, {}).state_dir == "/var/lib/dp"
    assert build_config({"state_dir": "/srv/dp"}, {}).state_dir == "/srv/dp"


def test_a_hash_htpasswd_b_did_not_write_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "htpasswd", HTPASSWD + "bob:$apr1$abcdefgh$0123456789abcdefghijkl\n")
    error = config_error({}, {"auth_htpasswd": path})
    assert error.key == "--auth-htpasswd"
    assert str(error) == (
        f"--auth-htpasswd: {path} line 2: user 'bob' has an Apache MD5 hash: only bcrypt "
        "entries are supported (htpasswd -B, or dockerproxy passwd)"
    )
    assert "0123456789abcdef" not in str(error)


def test_a_bad_tokens_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tokens.toml", 'ci = "short"\n')
    error = config_error({"auth": {"tokens": path}})
    assert str(error) == f"auth.tokens: {path}: the token of 'ci' is shorter than 16 characters"


@pytest.mark.parametrize(
    ("auth", "cli", "key"),
    [
        (1, {}, "auth"),
        ({"htpasswds": "x"}, {}, "auth.htpasswds"),
        ({"htpasswd": "/nonexistent/htpasswd"}, {}, "auth.htpasswd"),
        ({}, {"auth_tokens": "/nonexistent/tokens"}, "--auth-tokens"),
        ({"htpasswd": "HTPASSWD", "fail_delay": -1}, {}, "auth.fail_delay"),
        ({"htpasswd": "HTPASSWD", "fail_delay": 61}, {}, "auth.fail_delay"),
        ({"htpasswd": "HTPASSWD", "fail_delay": True}, {}, "auth.fail_delay"),
        ({"htpasswd": "HTPASSWD", "token_ttl": 0}, {}, "auth.token_ttl"),
        ({"htpasswd": "HTPASSWD", "anonymous_pull": ["a b"]}, {}, "auth.anonymous_pull"),
        ({"htpasswd": "HTPASSWD"}, {"anonymous_pull": ["x y"]}, "--anonymous-pull"),
        ({"htpasswd": "HTPASSWD", "admins": [""]}, {}, "auth.admins"),
        ({"htpasswd": "HTPASSWD", "admins": ["bob"]}, {}, "auth.admins"),
        # Meaningless without users: refused rather than silently ignored.
        ({"anonymous_pull": ["docker.io/**"]}, {}, "--anonymous-pull / auth.anonymous_pull"),
        ({}, {"anonymous_pull": ["docker.io/**"]}, "--anonymous-pull / auth.anonymous_pull"),
        ({"admins": ["alice"]}, {}, "auth.admins"),
    ],
)
def test_bad_auth_settings_name_their_key(
    auth: Any, cli: dict[str, Any], key: str, htpasswd: str
) -> None:
    if isinstance(auth, dict) and auth.get("htpasswd") == "HTPASSWD":
        auth = {**auth, "htpasswd": htpasswd}
    assert config_error({"auth": auth}, cli).key == key


def test_bad_state_dir_names_its_key() -> None:
    assert config_error({"state_dir": 3}).key == "state_dir"
    assert config_error({}, {"state_dir": ""}).key == "--state-dir"
