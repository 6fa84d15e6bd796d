"""C{dockerproxy passwd} and C{dockerproxy token new} (L{dockerproxy.usercli}): what they
write is what the proxy reads, files are replaced whole and private, and a file the proxy
would refuse is left alone."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import bcrypt
import pytest

from dockerproxy.config import build_config
from dockerproxy.usercli import passwd_main, token_main
from dockerproxy.userfiles import parse_htpasswd, parse_tokens


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def prompts(*answers: str) -> tuple[list[str], object]:
    asked: list[str] = []
    replies = iter(answers)

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(replies)

    return asked, ask


def test_passwd_from_a_prompt_adds_then_replaces(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    asked, ask = prompts("s3cret", "s3cret")
    err = io.StringIO()
    assert passwd_main([str(path), "alice"], stdin=Terminal(), stderr=err, ask=ask) == 0  # type: ignore[arg-type]
    assert asked == ["Password: ", "Again: "]
    assert err.getvalue() == f"added 'alice' in {path}; reload the proxy to use it\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = parse_htpasswd(path.read_text())
    assert users["alice"].startswith(b"$2y$10$") and bcrypt.checkpw(b"s3cret", users["alice"])
    # The proxy takes the file as it is.
    assert set(build_config({}, {"auth_htpasswd": str(path)}).auth.users) == {"alice"}

    err = io.StringIO()
    assert passwd_main([str(path), "alice"], stdin=io.StringIO("changed\n"), stderr=err) == 0
    assert err.getvalue().startswith("replaced 'alice'")
    assert bcrypt.checkpw(b"changed", parse_htpasswd(path.read_text())["alice"])
    assert "s3cret" not in path.read_text()


def test_passwd_keeps_other_lines_and_the_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("# our users\nbob:$2y$05$" + "b" * 53 + "\n")
    path.chmod(0o640)
    assert passwd_main([str(path), "carol"], stdin=io.StringIO("pw\n"), stderr=io.StringIO()) == 0
    assert path.read_text().splitlines()[:2] == ["# our users", "bob:$2y$05$" + "b" * 53]
    assert set(parse_htpasswd(path.read_text())) == {"bob", "carol"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["htpasswd"]  # no temporary file left


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away takes root")
def test_root_editing_a_file_keeps_its_owner_and_group(tmp_path: Path) -> None:
    """root:dockerproxy 0640, as the proxy's group reads it, stays so after an edit."""
    path = tmp_path / "tokens.toml"
    path.write_text("")
    os.chown(path, 65534, 65533)
    path.chmod(0o640)
    assert token_main(["new", "ci", "--file", str(path)], stdout=io.StringIO()) == 0
    after = path.stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (65534, 65533, 0o640)


@pytest.mark.parametrize(
    ("stdin", "answers", "problem"),
    [
        (io.StringIO("\n"), (), "the password is empty"),
        (io.StringIO("x" * 73 + "\n"), (), "at most 72 bytes"),
        (Terminal(), ("one", "two"), "the passwords differ"),
    ],
)
def test_passwd_refuses_bad_passwords(
    tmp_path: Path, stdin: io.StringIO, answers: tuple[str, ...], problem: str
) -> None:
    path = tmp_path / "htpasswd"
    err = io.StringIO()
    _, ask = prompts(*answers)
    assert passwd_main([str(path), "alice"], stdin=stdin, stderr=err, ask=ask) == 2  # type: ignore[arg-type]
    assert err.getvalue().startswith("dockerproxy passwd: ") and problem in err.getvalue()
    assert not path.exists()


def test_passwd_leaves_a_file_the_proxy_would_refuse(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("bob:$apr1$abcdefgh$0123456789abcdefghijkl\n")
    err = io.StringIO()
    assert passwd_main([str(path), "alice"], stdin=io.StringIO("pw\n"), stderr=err) == 2
    assert err.getvalue() == (
        f"dockerproxy passwd: {path} line 1: user 'bob' has an Apache MD5 hash: only bcrypt "
        "entries are supported (htpasswd -B, or dockerproxy passwd) (left unchanged)\n"
    )
    assert "alice" not in path.read_text()


def test_passwd_refuses_a_bad_user_name(tmp_path: Path) -> None:
    err = io.StringIO()
    code = passwd_main([str(tmp_path / "h"), "a:b"], stdin=io.StringIO("pw\n"), stderr=err)
    assert code == 2 and "not a usable user name" in err.getvalue()


def test_token_new_appends_and_prints_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    out, err = io.StringIO(), io.StringIO()
    assert token_main(["new", "ci", "--file", str(path)], stdout=out, stderr=err) == 0
    token = out.getvalue().strip()
    assert len(token) >= 40 and out.getvalue() == token + "\n"
    assert token not in err.getvalue()
    assert "not shown again" in err.getvalue()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_tokens(path.read_text()) == {"ci": token}
    out = io.StringIO()
    assert token_main(["new", "deploy", "--file", str(path)], stdout=out, stderr=err) == 0
    tokens = build_config({}, {"auth_tokens": str(path)}).auth.static_tokens
    assert tokens == {"ci": token, "deploy": out.getvalue().strip()}


def test_token_new_refuses_a_name_that_has_one(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token_main(["new", "ci", "--file", str(path)], stdout=io.StringIO(), stderr=io.StringIO())
    before = path.read_text()
    out, err = io.StringIO(), io.StringIO()
    assert token_main(["new", "ci", "--file", str(path)], stdout=out, stderr=err) == 2
    assert err.getvalue() == "dockerproxy token: 'ci' already has a token\n"
    assert out.getvalue() == "" and path.read_text() == before


def test_token_new_finds_the_file_in_the_config(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    config = tmp_path / "config.toml"
    config.write_text(f'[auth]\ntokens = "{tokens}"\n')
    out = io.StringIO()
    code = token_main(["new", "ci", "--config", str(config)], stdout=out, stderr=io.StringIO())
    assert code == 0 and parse_tokens(tokens.read_text()) == {"ci": out.getvalue().strip()}
    out = io.StringIO()
    env = {"DOCKERPROXY_CONFIG": str(config)}
    assert token_main(["new", "ops"], stdout=out, stderr=io.StringIO(), environ=env) == 0
    assert set(parse_tokens(tokens.read_text())) == {"ci", "ops"}


def test_token_new_without_a_file_says_how_to_name_one(tmp_path: Path) -> None:
    err = io.StringIO()
    env = {"DOCKERPROXY_CONFIG": str(tmp_path / "missing.toml")}
    assert token_main(["new", "ci"], stdout=io.StringIO(), stderr=err, environ=env) == 2
    assert err.getvalue() == f"dockerproxy token: cannot read {tmp_path}/missing.toml\n"
    config = tmp_path / "config.toml"
    config.write_text("[auth]\n")
    err = io.StringIO()
    assert token_main(["new", "ci", "--config", str(config)], stdout=io.StringIO(), stderr=err) == 2
    assert "has no [auth] tokens file: give --file FILE" in err.getvalue()
