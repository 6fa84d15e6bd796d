"""The dockerproxy command's dispatch, in process (the installed script is run by
tests/integration/test_cli.py)."""

from __future__ import annotations

from collections.abc import Sequence
from io import StringIO
from pathlib import Path

import pytest

from dockerproxy import cli, usercli
from dockerproxy.cache.store import FilesystemStore


def test_check_config_prints_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('listen = ["tcp:5001"]\nlog_format = "json"\n')
    out = StringIO()
    assert cli.main(["check-config", str(path)], out=out) == 0
    lines = out.getvalue().splitlines()
    assert 'listen = ["tcp:5001"]' in lines and 'log_format = "json"' in lines


@pytest.mark.parametrize(
    "text,error",
    [
        ("[limits]\ncolour = 1\n", "dockerproxy: limits.colour: unknown setting"),
        ("log_format = [\n", "dockerproxy: check-config: "),
        ('listen = ["tcp:notaport"]\n', "dockerproxy: --listen: bad endpoint 'tcp:notaport'"),
        ('listen = ["ssl:5443:privateKey=/nonexistent.pem"]\n', "No such file or directory"),
    ],
)
def test_check_config_refuses_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    out = StringIO()
    assert cli.main(["check-config", str(path)], out=out) == 2
    assert out.getvalue() == ""
    [line] = capsys.readouterr().err.splitlines()
    assert error in line and line.startswith("dockerproxy: ")


def test_a_missing_file_names_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err == (
        f"dockerproxy: check-config: cannot read {tmp_path / 'none.toml'}: "
        "No such file or directory\n"
    )


def test_cache_is_python_m_dockerproxy_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    FilesystemStore(tmp_path).create()
    assert cli.main(["cache", "stats", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"cache directory: {tmp_path}" in out and "blobs:           0 (0 B)" in out


@pytest.mark.parametrize(("name", "function"), [("passwd", "passwd_main"), ("token", "token_main")])
def test_users_and_tokens_run_usercli_with_their_arguments(
    name: str, function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def provide(argv: Sequence[str]) -> int:
        calls.append(list(argv))
        return 3

    monkeypatch.setattr(usercli, function, provide)
    assert cli.main([name, "new", "--flag", "ci"]) == 3
    assert calls == [["new", "--flag", "ci"]]


def test_no_command_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    for name in ("serve", "check-config", "cache", "passwd", "token"):
        assert name in err


def test_serve_refuses_a_bad_option_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--upstream", "ftp://example.test"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "dockerproxy: --upstream: must be an http:// or https:// URL, got 'ftp://example.test'\n"
    )
