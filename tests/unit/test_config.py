"""Settings from TOML and the command line, their validation, Options and the twistd plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

from dockerproxy.config import (
    DOCKER_HUB_URL,
    ClientLimits,
    Config,
    ConfigError,
    Timeouts,
    build_config,
    load_toml,
)
from dockerproxy.config.admin import AdminSettings, is_loopback_endpoint
from dockerproxy.config.policy import Quota, Quotas
from dockerproxy.config.workers import workers_config
from dockerproxy.tap import Options, config_from_environment
from tests.unit.fakes import SyncPool


def config_error(
    toml: dict[str, Any] | None = None, cli: dict[str, Any] | None = None
) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build_config(toml or {}, cli or {})
    return caught.value


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    return write(tmp_path, "ca.pem", "-----BEGIN CERTIFICATE-----\n")


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    config = build_config({}, {})
    assert config.listen == ("tcp:5000",)
    assert config.default is not None
    assert config.default.url == DOCKER_HUB_URL
    assert config.default.library_prefix is True
    assert config.default.is_docker_hub
    assert config.routes == {}
    assert config.timeouts == Timeouts()
    assert config.log_format == "text"
    assert config.upstream_ca is None


def test_default_timeouts() -> None:
    assert Timeouts() == Timeouts(connect=10.0, headers=60.0, idle=60.0)


@pytest.mark.parametrize(
    "url",
    [
        "https://registry-1.docker.io",
        "https://docker.io",
        "https://index.docker.io/",
        "https://REGISTRY.hub.docker.com",
    ],
)
def test_docker_hub_hosts_get_the_library_prefix(url: str) -> None:
    config = build_config({"upstream": url}, {})
    assert config.default is not None and config.default.library_prefix is True


def test_other_upstream_has_no_library_prefix() -> None:
    config = build_config({"upstream": "https://ghcr.io"}, {})
    assert config.default is not None
    assert config.default.library_prefix is False
    assert not config.default.is_docker_hub


def test_library_prefix_can_be_asked_for() -> None:
    toml = build_config({"upstream": "http://127.0.0.1:5001", "library_prefix": True}, {})
    cli = build_config({}, {"upstream": "http://127.0.0.1:5001", "library_prefix": True})
    assert toml.default is not None and toml.default.library_prefix is True
    assert cli.default is not None and cli.default.library_prefix is True


def test_library_prefix_can_be_turned_off_for_docker_hub() -> None:
    config = build_config({"library_prefix": False}, {})
    assert config.default is not None and config.default.library_prefix is False


def test_url_is_normalised() -> None:
    config = build_config({"upstream": "HTTPS://Registry.Example:8443/"}, {})
    assert config.default is not None
    assert config.default.url == "https://registry.example:8443"
    assert config.default.name == "registry.example:8443"


def test_listen_from_toml_string_and_list() -> None:
    assert build_config({"listen": "tcp:6000"}, {}).listen == ("tcp:6000",)
    assert build_config({"listen": ["tcp:1", "unix:/s"]}, {}).listen == ("tcp:1", "unix:/s")


def test_timeouts_from_toml() -> None:
    config = build_config({"timeouts": {"connect": 1, "headers": 2.5, "idle": "3"}}, {})
    assert config.timeouts == Timeouts(connect=1.0, headers=2.5, idle=3.0)


def test_timeouts_partly_given_keep_defaults() -> None:
    assert build_config({"timeouts": {"idle": 5}}, {}).timeouts == Timeouts(idle=5.0)


def test_log_format_json() -> None:
    assert build_config({"log_format": "json"}, {}).log_format == "json"


def test_upstream_ca(ca_file: str) -> None:
    assert build_config({"upstream_ca": ca_file}, {}).upstream_ca == ca_file


# --------------------------------------------------------------------------- routes


def test_short_route() -> None:
    config = build_config({"routes": {"ghcr.mirror.test": "https://ghcr.io"}}, {})
    route = config.routes["ghcr.mirror.test"]
    assert route.url == "https://ghcr.io"
    assert route.library_prefix is False


def test_short_route_to_docker_hub_has_the_library_prefix() -> None:
    config = build_config({"routes": {"hub.mirror.test": DOCKER_HUB_URL}}, {})
    assert config.routes["hub.mirror.test"].library_prefix is True


def test_table_route(ca_file: str) -> None:
    config = build_config(
        {
            "routes": {
                "Local.Mirror.Test:5000": {
                    "url": "http://127.0.0.1:5001",
                    "library_prefix": True,
                    "ca_file": ca_file,
                }
            }
        },
        {},
    )
    route = config.routes["local.mirror.test:5000"]
    assert route.url == "http://127.0.0.1:5001"
    assert route.library_prefix is True
    assert route.ca_file == ca_file
    assert route.name == "local.mirror.test:5000"


def test_routes_from_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "proxy.toml",
        """
listen = ["tcp:5000:interface=127.0.0.1"]

[routes]
"ghcr.mirror.test" = "https://ghcr.io"

[routes."hub.mirror.test"]
url = "https://registry-1.docker.io"
library_prefix = false

[timeouts]
idle = 30
""",
    )
    config = build_config(load_toml(path), {})
    assert config.listen == ("tcp:5000:interface=127.0.0.1",)
    assert config.routes["ghcr.mirror.test"].url == "https://ghcr.io"
    assert config.routes["hub.mirror.test"].library_prefix is False
    assert config.timeouts.idle == 30.0


def test_routes_from_cli() -> None:
    config = build_config(
        {}, {"routes": {"ghcr.mirror.test": "https://ghcr.io", "hub.mirror.test": DOCKER_HUB_URL}}
    )
    assert config.routes["ghcr.mirror.test"].url == "https://ghcr.io"
    assert config.routes["hub.mirror.test"].library_prefix is True


def test_routes_without_upstream_have_no_default() -> None:
    config = build_config({"routes": {"ghcr.mirror.test": "https://ghcr.io"}}, {})
    assert config.default is None
    assert build_config({}, {"routes": {"a.test": "https://ghcr.io"}}).default is None


def test_routes_with_upstream_keep_the_default() -> None:
    config = build_config(
        {"upstream": "https://quay.io", "routes": {"ghcr.mirror.test": "https://ghcr.io"}}, {}
    )
    assert config.default is not None and config.default.url == "https://quay.io"


# --------------------------------------------------------------------------- CLI over TOML


def test_cli_overrides_toml() -> None:
    config = build_config(
        {
            "listen": ["tcp:6000"],
            "upstream": "https://quay.io",
            "log_format": "text",
            "timeouts": {"idle": 5, "connect": 2},
        },
        {
            "listen": ["tcp:7000"],
            "upstream": "https://ghcr.io",
            "log_format": "json",
            "timeouts": {"idle": "9"},
        },
    )
    assert config.listen == ("tcp:7000",)
    assert config.default is not None and config.default.url == "https://ghcr.io"
    assert config.log_format == "json"
    assert config.timeouts == Timeouts(connect=2.0, headers=60.0, idle=9.0)


def test_cli_library_prefix_overrides_toml() -> None:
    config = build_config({"library_prefix": True}, {"library_prefix": False})
    assert config.default is not None and config.default.library_prefix is False


def test_cli_route_overrides_toml_route() -> None:
    config = build_config(
        {"routes": {"a.test": "https://quay.io"}}, {"routes": {"A.test": "https://ghcr.io"}}
    )
    assert config.routes["a.test"].url == "https://ghcr.io"


def test_empty_cli_values_do_not_override() -> None:
    config = build_config(
        {"listen": "tcp:6000"}, {"listen": [], "upstream": None, "log_format": None, "routes": {}}
    )
    assert config.listen == ("tcp:6000",)


def test_cli_upstream_ca_overrides_toml(tmp_path: Path, ca_file: str) -> None:
    other = write(tmp_path, "other.pem", "x")
    assert build_config({"upstream_ca": ca_file}, {"upstream_ca": other}).upstream_ca == other


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({"upstream": "ftp://registry.example"}, {}, "upstream"),
        ({"upstream": "registry.example"}, {}, "upstream"),
        ({"upstream": 5}, {}, "upstream"),
        ({}, {"upstream": "ftp://x"}, "--upstream"),
        ({"upstream": "https://registry.example/v2/"}, {}, "upstream"),
        ({"upstream": "https://registry.example?x=1"}, {}, "upstream"),
        ({"upstream": "https://user:pw@registry.example"}, {}, "upstream"),
        ({"upstream": "https://registry.example:99999"}, {}, "upstream"),
        ({"upstream": "https://registry.example:port"}, {}, "upstream"),
        ({"bogus": 1}, {}, "bogus"),
        ({"routes": {"a.test": {"url": "https://ghcr.io", "bogus": 1}}}, {}, "routes.a.test.bogus"),
        ({"routes": {"a.test": {"library_prefix": True}}}, {}, "routes.a.test.url"),
        ({"routes": {"a.test": {"url": "ftp://ghcr.io"}}}, {}, "routes.a.test.url"),
        ({"routes": {"a.test": "https://ghcr.io/path"}}, {}, "routes.a.test"),
        ({"routes": {"a.test": 5}}, {}, "routes.a.test"),
        (
            {"routes": {"a.test": {"url": "https://ghcr.io", "library_prefix": "yes"}}},
            {},
            "routes.a.test.library_prefix",
        ),
        ({"routes": {"a/b": "https://ghcr.io"}}, {}, "routes.a/b"),
        ({"routes": "https://ghcr.io"}, {}, "routes"),
        ({}, {"routes": {"a.test": "unknown.example"}}, "--route a.test"),
        ({"timeouts": {"idle": 0}}, {}, "timeouts.idle"),
        ({"timeouts": {"idle": -1}}, {}, "timeouts.idle"),
        ({"timeouts": {"headers": "soon"}}, {}, "timeouts.headers"),
        ({"timeouts": {"connect": True}}, {}, "timeouts.connect"),
        ({"timeouts": {"connect": 86401}}, {}, "timeouts.connect"),
        ({"timeouts": {"total": 5}}, {}, "timeouts.total"),
        ({"timeouts": 5}, {}, "timeouts"),
        ({}, {"timeouts": {"idle": "x"}}, "--idle-timeout"),
        ({}, {"timeouts": {"connect": "0"}}, "--connect-timeout"),
        ({"log_format": "xml"}, {}, "log_format"),
        ({}, {"log_format": "xml"}, "--log-format"),
        ({"library_prefix": "yes"}, {}, "library_prefix"),
        ({"listen": []}, {}, "listen"),
        ({"listen": [5000]}, {}, "listen"),
        ({"upstream_ca": "/nonexistent/ca.pem"}, {}, "upstream_ca"),
        ({}, {"upstream_ca": "/nonexistent/ca.pem"}, "--upstream-ca"),
        (
            {"routes": {"a.test": {"url": "https://ghcr.io", "ca_file": "/nonexistent/ca.pem"}}},
            {},
            "routes.a.test.ca_file",
        ),
    ],
)
def test_validation_errors_name_their_key(
    toml: dict[str, Any], cli: dict[str, Any], key: str
) -> None:
    error = config_error(toml, cli)
    assert error.key == key
    assert str(error).startswith(f"{key}: ")
    assert "\n" not in str(error)


def test_bad_url_error_shows_the_value() -> None:
    assert "ftp://registry.example" in config_error({"upstream": "ftp://registry.example"}).problem


def test_missing_ca_file_error_names_the_file() -> None:
    assert "/nonexistent/ca.pem" in config_error({"upstream_ca": "/nonexistent/ca.pem"}).problem


def test_bad_toml_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.toml", "upstream = \n[[[")
    with pytest.raises(ConfigError) as caught:
        load_toml(path)
    assert caught.value.key == "--config"
    assert path in str(caught.value)
    assert "not valid TOML" in str(caught.value)


def test_missing_toml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_toml(str(tmp_path / "missing.toml"))
    assert caught.value.key == "--config"
    assert "missing.toml" in str(caught.value)


def test_config_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "proxy.toml", 'upstream = "https://quay.io"\n')
    config = config_from_environment({"DOCKERPROXY_CONFIG": path})
    assert config.default is not None and config.default.url == "https://quay.io"
    assert config_from_environment({}) == build_config({}, {})


# --------------------------------------------------------------------------- Options


def parse_options(argv: list[str]) -> Config:
    options = Options()
    options.parseOptions(argv)
    return options.config


def usage_failure(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        parse_options(argv)
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert captured.err.endswith("\n")
    assert lines[0].startswith("dockerproxy: ")
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--bogus"], "--bogus"),
        (["--upstream"], "--upstream"),
        (["--upstream", "ftp://x"], "--upstream"),
        (["--route", "no-equals-sign"], "--route"),
        (["--route", "=https://ghcr.io"], "--route"),
        (["--route", "a.test=ftp://ghcr.io"], "--route a.test"),
        (["--idle-timeout", "soon"], "--idle-timeout"),
        (["--headers-timeout", "0"], "--headers-timeout"),
        (["--connect-timeout", "-3"], "--connect-timeout"),
        (["--log-format", "xml"], "--log-format"),
        (["--upstream-ca", "/nonexistent/ca.pem"], "--upstream-ca"),
        (["--config", "/nonexistent/proxy.toml"], "--config"),
        (["--listen", "bogus:5000"], "--listen"),
        (["--listen", "tcp:notaport"], "--listen"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert named in usage_failure(argv, capsys)


def test_bad_listen_shows_the_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert "bogus:5000" in usage_failure(["--listen", "bogus:5000"], capsys)


def test_bad_toml_in_config_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.toml", "[[[\n")
    line = usage_failure(["--config", path], capsys)
    assert "--config" in line and path in line


def test_bad_setting_in_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "proxy.toml", "[timeouts]\nidle = 0\n")
    assert "timeouts.idle" in usage_failure(["--config", path], capsys)


def test_bad_listen_in_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "proxy.toml", 'listen = ["nonsense:1"]\n')
    assert "nonsense:1" in usage_failure(["--config", path], capsys)


def test_no_options() -> None:
    assert parse_options([]) == build_config({}, {})


def test_good_options() -> None:
    config = parse_options(
        [
            "--listen",
            "tcp:6000:interface=127.0.0.1",
            "--listen",
            "tcp:6001",
            "--upstream",
            "http://127.0.0.1:5001",
            "--library-prefix",
            "--route",
            "ghcr.mirror.test=https://ghcr.io",
            "--route",
            "hub.mirror.test=https://registry-1.docker.io",
            "--connect-timeout",
            "1",
            "--headers-timeout",
            "2.5",
            "--idle-timeout",
            "30",
            "--log-format",
            "json",
        ]
    )
    assert config.listen == ("tcp:6000:interface=127.0.0.1", "tcp:6001")
    assert config.default is not None
    assert config.default.url == "http://127.0.0.1:5001"
    assert config.default.library_prefix is True
    assert set(config.routes) == {"ghcr.mirror.test", "hub.mirror.test"}
    assert config.routes["ghcr.mirror.test"].library_prefix is False
    assert config.routes["hub.mirror.test"].library_prefix is True
    assert config.timeouts == Timeouts(connect=1.0, headers=2.5, idle=30.0)
    assert config.log_format == "json"


def test_no_library_prefix_option() -> None:
    config = parse_options(["--no-library-prefix"])
    assert config.default is not None and config.default.library_prefix is False


def test_options_override_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "proxy.toml",
        'upstream = "https://quay.io"\nlisten = "tcp:6000"\n[timeouts]\nidle = 5\n',
    )
    config = parse_options(
        ["--config", path, "--upstream", "https://ghcr.io", "--idle-timeout", "7"]
    )
    assert config.default is not None and config.default.url == "https://ghcr.io"
    assert config.listen == ("tcp:6000",)
    assert config.timeouts.idle == 7.0


def test_route_option_alone_means_no_default() -> None:
    config = parse_options(["--route", "a.test=https://ghcr.io"])
    assert config.routes["a.test"].url == "https://ghcr.io"
    assert config.default is None


# --------------------------------------------------------------------------- twistd plugin


def test_twistd_plugin_is_found() -> None:
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "dockerproxy" in makers
    maker = makers["dockerproxy"]
    options = maker.options()
    assert isinstance(options, Options)
    options.parseOptions(["--upstream", "https://ghcr.io"])
    assert options.config.default is not None
    assert options.config.default.url == "https://ghcr.io"


def test_upstream_credentials_file(tmp_path: Path) -> None:
    creds = tmp_path / "hub.toml"
    creds.write_text('username = "bot"\npassword = "s3cret"\n')
    config = build_config({}, {"upstream_credentials": str(creds)})
    assert config.default is not None and config.default.credentials is not None
    assert config.default.credentials.username == "bot"
    assert config.registries["docker.io"].credentials == config.default.credentials
    assert "s3cret" not in repr(config)


def test_bad_upstream_credentials_files_name_the_option(tmp_path: Path) -> None:
    creds = tmp_path / "hub.toml"
    creds.write_text('username = "bot"\n')
    with pytest.raises(ConfigError) as caught:
        build_config({}, {"upstream_credentials": str(creds)})
    assert caught.value.key.startswith("--upstream-credentials")
    creds.write_text('username = "bot"\npassword = "x"\ntoken = "y"\n')
    with pytest.raises(ConfigError) as caught:
        build_config({}, {"upstream_credentials": str(creds)})
    assert "s3cret" not in str(caught.value) and "token" in caught.value.key


# ------------------------------------------------------------------ client limits, public URL


def test_client_limits_defaults() -> None:
    assert build_config({}, {}).limits == ClientLimits(
        client_header_timeout=30.0, client_idle_timeout=60.0, max_connections=10_000
    )
    assert build_config({}, {}).public_url is None


def test_client_limits_from_toml_and_options() -> None:
    toml = {
        "limits": {"client_header_timeout": 5, "client_idle_timeout": 7.5, "max_connections": 50}
    }
    assert build_config(toml, {}).limits == ClientLimits(5.0, 7.5, 50)
    config = parse_options(
        ["--client-header-timeout", "2", "--client-idle-timeout", "3", "--max-connections", "10"]
    )
    assert config.limits == ClientLimits(2.0, 3.0, 10)
    assert build_config(toml, {"max_connections": "9"}).limits == ClientLimits(5.0, 7.5, 9)


def test_drain_timeout_from_toml_and_option() -> None:
    assert build_config({}, {}).drain_timeout == 30.0
    assert build_config({"drain_timeout": 45}, {}).drain_timeout == 45.0
    assert parse_options(["--drain-timeout", "2.5"]).drain_timeout == 2.5
    assert build_config({"drain_timeout": 45}, {"drain_timeout": "5"}).drain_timeout == 5.0


def test_workers_from_toml_and_option() -> None:
    assert build_config({}, {}).workers == 1
    assert build_config({"workers": 4}, {}).workers == 4
    assert parse_options(["--workers", "3"]).workers == 3
    assert build_config({"workers": 4}, {"workers": "2"}).workers == 2
    assert workers_config({"workers": "auto"}, {}, cores=lambda: 6) == 6
    assert workers_config({}, {"workers": "auto"}, cores=lambda: None) == 1


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({"workers": 0}, {}, "workers"),
        ({"workers": "many"}, {}, "workers"),
        ({"workers": True}, {}, "workers"),
        ({}, {"workers": "1000"}, "--workers"),
    ],
)
def test_bad_workers(toml: dict[str, Any], cli: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f'^{key}: must be "auto" or a whole number'):
        build_config(toml, cli)


def test_http2_from_toml_and_option() -> None:
    assert build_config({}, {}).http2 is False
    assert build_config({"http2": True}, {}).http2 is True
    assert parse_options(["--http2"]).http2 is True
    assert parse_options(["--no-http2"]).http2 is False
    assert build_config({"http2": True}, {"http2": False}).http2 is False
    with pytest.raises(ConfigError, match="http2: must be true or false"):
        build_config({"http2": "yes"}, {})


def test_public_url_from_toml_and_option() -> None:
    assert (
        build_config({"public_url": "https://Mirror.Example.test"}, {}).public_url
        == "https://mirror.example.test"
    )
    config = parse_options(["--public-url", "http://mirror.test:5000/"])
    assert config.public_url == "http://mirror.test:5000"
    assert (
        build_config({"public_url": "https://a.test"}, {"public_url": "https://b.test"}).public_url
        == "https://b.test"
    )


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({"limits": 5}, {}, "limits"),
        ({"limits": {"header_timeout": 5}}, {}, "limits.header_timeout"),
        ({"limits": {"client_header_timeout": 0}}, {}, "limits.client_header_timeout"),
        ({"limits": {"client_idle_timeout": "soon"}}, {}, "limits.client_idle_timeout"),
        ({"limits": {"max_connections": 0}}, {}, "limits.max_connections"),
        ({"limits": {"max_connections": 1.5}}, {}, "limits.max_connections"),
        ({"limits": {"max_connections": True}}, {}, "limits.max_connections"),
        ({}, {"max_connections": "lots"}, "--max-connections"),
        ({}, {"client_header_timeout": "-1"}, "--client-header-timeout"),
        ({"public_url": "ftp://mirror.test"}, {}, "public_url"),
        ({"public_url": "https://mirror.test/v2/"}, {}, "public_url"),
        ({"public_url": "https://mirror.test?x=1"}, {}, "public_url"),
        ({"public_url": "https://user:pw@mirror.test"}, {}, "public_url"),
        ({"public_url": "https://mirror.test:99999"}, {}, "public_url"),
        ({"public_url": "mirror.test"}, {}, "public_url"),
        ({}, {"public_url": "https://"}, "--public-url"),
        ({"drain_timeout": 0}, {}, "drain_timeout"),
        ({"drain_timeout": "a while"}, {}, "drain_timeout"),
        ({"drain_timeout": 7200}, {}, "drain_timeout"),
        ({}, {"drain_timeout": "-5"}, "--drain-timeout"),
    ],
)
def test_client_settings_errors_name_their_key(
    toml: dict[str, Any], cli: dict[str, Any], key: str
) -> None:
    error = config_error(toml, cli)
    assert error.key == key
    assert "\n" not in str(error)


# --------------------------------------------------------------------------- the largest blob


def test_max_blob_size_defaults_to_32_gib_and_reaches_the_cache(tmp_path: Path) -> None:
    from twisted.internet.task import Clock

    from dockerproxy.wiring import make_mirror, make_proxy

    config = parse_options(["--cache-dir", str(tmp_path)])
    assert config.cache.max_blob_size == 32 * 1024**3
    mirror = make_mirror(
        config.cache, Clock(), make_proxy(config, Clock(), http=object())[0], SyncPool()
    )
    assert mirror is not None and mirror.blobs.max_blob_size == 32 * 1024**3


def test_max_blob_size_from_toml_and_the_command_line(tmp_path: Path) -> None:
    toml = {"cache": {"max_blob_size": "2GB"}}
    assert build_config(toml, {}).cache.max_blob_size == 2 * 10**9
    path = write(tmp_path, "proxy.toml", '[cache]\nmax_blob_size = "2GB"\n')
    config = parse_options(["--config", path, "--max-blob-size", "1GiB"])
    assert config.cache.max_blob_size == 1024**3


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({"cache": {"max_blob_size": "huge"}}, {}, "cache.max_blob_size"),
        ({"cache": {"max_blob_size": 0}}, {}, "cache.max_blob_size"),
        ({}, {"max_blob_size": "-1GiB"}, "--max-blob-size"),
    ],
)
def test_bad_max_blob_size_names_its_key(
    toml: dict[str, Any], cli: dict[str, Any], key: str
) -> None:
    assert config_error(toml, cli).key == key


def test_bad_max_blob_size_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--max-blob-size" in usage_failure(["--max-blob-size", "lots"], capsys)


def test_cache_config_defaults_and_errors() -> None:
    config = build_config({}, {"cache_dir": "/tmp/x", "cache_max_size": "30MiB"})
    assert config.cache.directory == "/tmp/x"
    assert config.cache.max_size == 30 * 1024 * 1024
    assert build_config({}, {"cache_enabled": False}).cache.directory is None
    assert build_config({"cache": {"max_size": "2GB"}}, {}).cache.max_size == 2 * 10**9


# --------------------------------------------------------------------------- access


def test_access_settings_from_toml_and_options() -> None:
    toml = {
        "access": {
            "allow_ip": ["10.0.0.0/8"],
            "trusted_proxies": "127.0.0.1",
            "allow": ["docker.io/library/*"],
            "deny": ["docker.io/library/evil"],
        }
    }
    access = build_config(toml, {}).access
    assert [str(n) for n in access.allow_ip] == ["10.0.0.0/8"]
    assert [str(n) for n in access.trusted_proxies] == ["127.0.0.1/32"]
    assert [p.text for p in access.allow] == ["docker.io/library/*"]
    assert [p.text for p in access.deny] == ["docker.io/library/evil"]
    config = parse_options(
        [
            "--allow-ip",
            "192.0.2.0/24",
            "--allow-ip",
            "::1",
            "--trusted-proxy",
            "10.1.0.0/16",
            "--deny",
            "ghcr.io/**",
        ]
    )
    assert [str(n) for n in config.access.allow_ip] == ["192.0.2.0/24", "::1/128"]
    assert [p.text for p in config.access.deny] == ["ghcr.io/**"]
    assert build_config({}, {}).access.allow_ip == ()


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({"access": 1}, {}, "access"),
        ({"access": {"allow_ips": []}}, {}, "access.allow_ips"),
        ({"access": {"allow_ip": ["10.0.0.0/33"]}}, {}, "--allow-ip / access.allow_ip"),
        ({"access": {"allow": [3]}}, {}, "access.allow"),
        ({}, {"deny": ["a b"]}, "--deny / access.deny"),
    ],
)
def test_bad_access_settings_name_their_key(
    toml: dict[str, Any], cli: dict[str, Any], key: str
) -> None:
    assert config_error(toml, cli).key == key


# --------------------------------------------------------------------------- client quotas


def test_no_quotas_by_default() -> None:
    quotas = build_config({}, {}).quotas
    assert quotas == Quotas()
    assert quotas.unlimited and not quotas.shaped


def test_quotas_from_limits_table_and_options() -> None:
    toml = {
        "limits": {
            "client_header_timeout": 5,
            "rate_limit": "600/m",
            "rate_burst": 20,
            "bandwidth_limit": "20MiB/s",
            "max_pulls": 4,
        }
    }
    config = build_config(toml, {})
    assert config.quotas.default == Quota(10.0, 20, 20 * 1024 * 1024, 4)
    assert config.limits.client_header_timeout == 5.0
    argv = ["--rate-limit", "5/s", "--rate-burst", "8", "--bandwidth-limit", "1MB/s"]
    config = parse_options([*argv, "--max-pulls", "2"])
    assert config.quotas.default == Quota(5.0, 8, 1_000_000, 2)
    # Options win over the file, key by key.
    config = build_config(toml, {"rate_limit": "2", "max_pulls": "0"})
    assert config.quotas.default == Quota(2.0, 20, 20 * 1024 * 1024, None)


def test_rate_burst_defaults_to_one_second_of_rate() -> None:
    assert Quota(rate_limit=10.0).burst == 10
    assert Quota(rate_limit=0.5).burst == 1
    assert Quota(rate_limit=2.5, rate_burst=7).burst == 7


def test_users_override_the_keys_they_set() -> None:
    toml = {
        "limits": {"rate_limit": "10/s", "bandwidth_limit": "20MiB/s", "max_pulls": 3},
        "users": {
            "ci": {"rate_limit": 0, "bandwidth_limit": 0, "max_pulls": 0},
            "alice": {"bandwidth_limit": "5MiB/s"},
        },
    }
    quotas = build_config(toml, {}).quotas
    assert quotas.for_user("ci") == Quota()
    assert quotas.for_user("ci").unlimited
    assert quotas.for_user("alice") == Quota(10.0, None, 5 * 1024 * 1024, 3)
    assert quotas.for_user("bob") == quotas.default == quotas.for_user(None)
    assert quotas.shaped and not quotas.unlimited
    # A user's own limits with none for everybody else.
    quotas = build_config({"users": {"guest": {"max_pulls": 1}}}, {}).quotas
    assert quotas.default.unlimited and not quotas.unlimited and not quotas.shaped


# --------------------------------------------------------------------------- admin


def test_admin_listen_from_toml_and_options() -> None:
    assert build_config({}, {}).admin.listen == ()
    toml = {"admin": {"listen": ["tcp:9100:interface=127.0.0.1", "unix:/run/dp-admin.sock"]}}
    admin = build_config(toml, {}).admin
    assert admin.listen == ("tcp:9100:interface=127.0.0.1", "unix:/run/dp-admin.sock")
    assert admin.public == ()
    local = "tcp:9101:interface=127.0.0.1"
    config = parse_options(["--admin-listen", local, "--admin-listen", "unix:/run/a.sock"])
    assert config.admin.listen == (local, "unix:/run/a.sock")
    assert config.admin.public == ()
    assert AdminSettings(("tcp:9101", local, "tcp:9102")).public == ("tcp:9101", "tcp:9102")
    assert build_config(toml, {"admin_listen": [local]}).admin.listen == (local,)


def test_a_public_admin_listener_needs_admins(capsys: pytest.CaptureFixture[str]) -> None:
    message = usage_failure(["--admin-listen", "tcp:9101"], capsys)
    assert message.startswith("dockerproxy: --admin-listen: 'tcp:9101' listens beyond loopback")
    assert config_error({"admin": {"listen": ["tcp:9100"]}}, {}).key == "admin.listen"


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({"limits": {"rate_limit": "fast"}}, {}, "limits.rate_limit"),
        ({"limits": {"rate_limit": "10/h"}}, {}, "limits.rate_limit"),
        ({"limits": {"rate_limit": -1}}, {}, "limits.rate_limit"),
        ({"limits": {"rate_limit": True}}, {}, "limits.rate_limit"),
        ({"limits": {"rate_burst": 0}}, {}, "limits.rate_burst"),
        ({"limits": {"bandwidth_limit": "lots"}}, {}, "limits.bandwidth_limit"),
        ({"limits": {"bandwidth_limit": "1KiB/s"}}, {}, "limits.bandwidth_limit"),
        ({"limits": {"max_pulls": 1.5}}, {}, "limits.max_pulls"),
        ({"limits": {"max_pull": 1}}, {}, "limits.max_pull"),
        ({}, {"rate_limit": "x"}, "--rate-limit"),
        ({}, {"bandwidth_limit": "20MiB/h"}, "--bandwidth-limit"),
        ({}, {"max_pulls": "-1"}, "--max-pulls"),
        ({}, {"rate_burst": "many"}, "--rate-burst"),
        ({"users": []}, {}, "users"),
        ({"users": {"ci": 1}}, {}, "users.ci"),
        ({"users": {"ci": {"rate": 1}}}, {}, "users.ci.rate"),
        ({"users": {"ci": {"max_pulls": "all"}}}, {}, "users.ci.max_pulls"),
    ],
)
def test_bad_quota_settings_name_their_key(
    toml: dict[str, Any], cli: dict[str, Any], key: str
) -> None:
    assert config_error(toml, cli).key == key


def test_bad_quota_option_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--bandwidth-limit" in usage_failure(["--bandwidth-limit", "fast"], capsys)


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({"admin": []}, {}, "admin"),
        ({"admin": {"listens": []}}, {}, "admin.listens"),
        ({"admin": {"listen": [9100]}}, {}, "admin.listen"),
        ({"admin": {"listen": [""]}}, {}, "admin.listen"),
    ],
)
def test_bad_admin_settings_name_their_key(
    toml: dict[str, Any], cli: dict[str, Any], key: str
) -> None:
    assert config_error(toml, cli).key == key


def test_bad_admin_endpoint_option(capsys: pytest.CaptureFixture[str]) -> None:
    bad = "tcp:notaport:interface=127.0.0.1"
    message = usage_failure(["--admin-listen", bad], capsys)
    assert message.startswith(f"dockerproxy: --admin-listen: bad endpoint {bad!r}")


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp:9100", False),
        ("tcp:9100:interface=0.0.0.0", False),
        ("tcp:9100:interface=192.0.2.1", False),
        ("tcp:9100:interface=127.0.0.1", True),
        ("tcp:9100:interface=127.1.2.3", True),
        ("tcp6:9100:interface=\\:\\:1", True),
        ("tcp6:9100", False),
        ("ssl:9443:privateKey=k.pem:interface=127.0.0.1", True),
        ("unix:/run/dockerproxy/admin.sock", True),
        ("systemd:domain=INET:index=1", False),
        ("tcp:9100:interface=localhost", False),  # a name could resolve anywhere
    ],
)
def test_which_admin_endpoints_are_loopback(endpoint: str, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback


# --------------------------------------------------------------------------- search


def test_search_asks_docker_hubs_index_unless_configured_otherwise() -> None:
    search = build_config({}, {}).search
    assert search.upstream is not None
    assert (search.upstream.name, search.upstream.url) == (
        "index.docker.io",
        "https://index.docker.io",
    )
    toml = {"search": {"upstream": "http://127.0.0.1:5005/"}}
    assert build_config(toml, {}).search.upstream.url == "http://127.0.0.1:5005"  # type: ignore[union-attr]
    config = parse_options(["--search-upstream", "https://index.test"])
    assert config.search.upstream is not None
    assert config.search.upstream.url == "https://index.test"
    assert not config.search.upstream.library_prefix


def test_search_is_off_without_presets_or_when_disabled() -> None:
    assert build_config({"presets": False, "upstream": "http://r.test"}, {}).search.upstream is None
    assert parse_options(["--no-presets", "--upstream", "http://r.test"]).search.upstream is None
    assert build_config({"search": {"enabled": False}}, {}).search.upstream is None
    config = parse_options(
        ["--no-presets", "--upstream", "http://r.test", "--search-upstream", "http://i.test"]
    )
    assert config.search.upstream is not None


@pytest.mark.parametrize(
    ("toml", "cli", "key"),
    [
        ({"search": "https://index.test"}, {}, "search"),
        ({"search": {"url": "https://index.test"}}, {}, "search.url"),
        ({"search": {"upstream": "ftp://index.test"}}, {}, "search.upstream"),
        ({"search": {"upstream": "https://index.test/v1"}}, {}, "search.upstream"),
        ({"search": {"enabled": "no"}}, {}, "search.enabled"),
        ({}, {"search_upstream": "index.test"}, "--search-upstream"),
    ],
)
def test_bad_search_settings_name_their_key(
    toml: dict[str, Any], cli: dict[str, Any], key: str
) -> None:
    assert config_error(toml, cli).key == key


# --------------------------------------------------------------------------- fleet


def test_fleet_redis_from_toml_and_option() -> None:
    assert build_config({}, {}).fleet.redis is None
    toml = {"fleet": {"redis": "redis://127.0.0.1:6379/2", "prefix": "mirror:", "timeout": 0.2}}
    fleet = build_config(toml, {}).fleet
    assert (fleet.redis, fleet.prefix, fleet.timeout) == (
        "redis://127.0.0.1:6379/2",
        "mirror:",
        0.2,
    )
    assert (
        parse_options(["--redis", "rediss://:pw@redis.test"]).fleet.redis
        == "rediss://:pw@redis.test"
    )
    assert build_config(toml, {"redis": "redis://other.test"}).fleet.redis == "redis://other.test"
    tls = "rediss://redis.test:6380/1?ssl_ca_certs=/etc/ca.pem"
    assert build_config({}, {"redis": tls}).fleet.redis == tls


@pytest.mark.parametrize(
    ("toml", "cli", "message"),
    [
        (
            {"fleet": {"redis": "redis://redis.test"}},
            {"cache_enabled": False},
            "fleet.redis: a fleet shares the cache",
        ),
        ({"fleet": {"redis": "http://redis.test"}}, {}, "fleet.redis: must be a redis://"),
        ({"fleet": {"redis": "unix:///run/redis.sock"}}, {}, "fleet.redis: must be a redis://"),
        ({"fleet": {"redis": 6379}}, {}, "fleet.redis: must be a redis://"),
        ({}, {"redis": "redis://:secret@redis.test:99999"}, "--redis: is not a valid"),
        ({}, {"redis": "redis://redis.test/db"}, "--redis: the path names a database"),
        ({}, {"redis": "redis://redis.test/0?socket_timeout=60"}, "takes only the parameters"),
        ({}, {"redis": "rediss://redis.test/0?ssl_min_version=x"}, "an invalid value"),
        ({"fleet": {"prefix": ""}}, {}, "fleet.prefix: must be 1 to 64"),
        ({"fleet": {"timeout": 0}}, {}, "fleet.timeout: must be between"),
        ({"fleet": {"colour": 1}}, {}, "fleet.colour: unknown setting"),
        ({"fleet": "redis://x"}, {}, "fleet: must be a table"),
    ],
)
def test_fleet_settings_are_checked_without_echoing_the_url(
    toml: dict[str, Any], cli: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_config(toml, cli)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "key", ["access", "admin", "auth", "cache", "fleet", "search", "limits", "users.bob"]
)
def test_every_table_is_checked_to_be_a_table_with_known_keys(key: str) -> None:
    def nested(value: Any) -> dict[str, Any]:
        for part in reversed(key.split(".")):
            value = {part: value}
        return value

    with pytest.raises(ConfigError) as not_a_table:
        build_config(nested("text"), {})
    assert str(not_a_table.value) == f"{key}: must be a table"
    with pytest.raises(ConfigError) as unknown:
        build_config(nested({"colour": 1}), {})
    assert str(unknown.value) == f"{key}.colour: unknown setting"


def test_the_s3_table_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^cache\.s3: must be a table$"):
        build_config({"cache": {"s3": "bucket"}}, {})
    with pytest.raises(ConfigError, match=r"^cache\.s3\.colour: unknown setting$"):
        build_config({"cache": {"s3": {"colour": 1}}}, {})
