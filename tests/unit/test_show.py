"""check-config's view of the settings: every setting shown, no secret ever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockerproxy.config import build_config
from dockerproxy.config.show import MASK, show_settings

SECRETS = ("hunter2-password", "s3-secret-key", "s3-session-token")


def settings_with_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """S3 credentials from the environment, as operators often give them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS[1])
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRETS[2])
    password = tmp_path / "hub.password"
    password.write_text(SECRETS[0] + "\n")
    config = build_config(
        {
            "upstream": "https://registry.test",
            "presets": False,
            "routes": {"ghcr.mirror.test": "https://ghcr.test"},
            "registries": {
                "registry.test": {
                    "url": "https://registry.test",
                    "username": "bot",
                    "password_file": str(password),
                }
            },
            "cache": {
                "dir": str(tmp_path / "cache"),
                "s3": {
                    "endpoint": "http://127.0.0.1:9",
                    "bucket": "blobs",
                },
            },
            "access": {"deny": ["docker.io/**"], "allow_ip": ["10.0.0.0/8"]},
        },
        {},
    )
    return show_settings(config)


def test_secrets_are_masked_and_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = settings_with_secrets(tmp_path, monkeypatch)
    text = "\n".join(lines)
    for secret in SECRETS:
        assert secret not in text
    assert f'registries."registry.test".credentials.password = "{MASK}"' in lines
    assert f'cache.s3.secret_access_key = "{MASK}"' in lines
    assert f'cache.s3.session_token = "{MASK}"' in lines
    assert 'registries."registry.test".credentials.username = "bot"' in lines
    assert 'cache.s3.access_key_id = "AKIDTEST"' in lines


def test_every_setting_is_a_dotted_key_with_a_json_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = settings_with_secrets(tmp_path, monkeypatch)
    values = dict(line.split(" = ", 1) for line in lines)
    assert len(values) == len(lines), "each key once"
    assert json.loads(values['routes."ghcr.mirror.test".url']) == "https://ghcr.test"
    assert json.loads(values["access.deny"]) == ["docker.io/**"]
    assert json.loads(values["access.allow_ip"]) == ["10.0.0.0/8"]
    assert json.loads(values["limits.max_connections"]) == 10000
    assert json.loads(values["public_url"]) is None
    assert json.loads(values["listen"]) == ["tcp:5000"]


def test_an_unset_secret_shows_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    s3 = {
        "endpoint": "http://127.0.0.1:9",
        "bucket": "blobs",
        "access_key_id": "k",
        "secret_access_key": "s",
    }
    config = build_config(
        {"presets": False, "upstream": "https://registry.test", "cache": {"s3": s3}}, {}
    )
    lines = show_settings(config)
    assert "cache.s3.session_token = null" in lines


def test_a_redis_url_is_masked_it_may_hold_a_password() -> None:
    config = build_config({"fleet": {"redis": "redis://:hunter2@redis.test"}}, {})
    lines = show_settings(config)
    assert f'fleet.redis = "{MASK}"' in lines
    assert not any("hunter2" in line for line in lines)
