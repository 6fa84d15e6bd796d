"""C{dockerproxy passwd FILE USER} and C{dockerproxy token new NAME}: the files of
L{dockerproxy.userfiles}, written as the proxy reads them.

Each file is replaced whole (a temporary file beside it, synced, renamed), so a proxy
reloading at that moment reads the old file or the new one, never half of one; a new
file is readable by its owner only. A file whose other lines the proxy would refuse is
left alone, with the same one-line error the proxy would give. The proxy takes the
change at its next reload (SIGHUP).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from typing import TextIO

from dockerproxy.userfiles import (
    UserFileError,
    hash_password,
    new_token,
    parse_htpasswd,
    parse_tokens,
    with_htpasswd_entry,
    with_token,
)

DEFAULT_CONFIG = "/etc/dockerproxy/config.toml"


class CommandError(Exception):
    """What to tell the operator, on one line, before exiting with status 2."""


def passwd_main(
    argv: Sequence[str],
    stdin: TextIO | None = None,
    stderr: TextIO | None = None,
    ask: Callable[[str], str] = getpass.getpass,
) -> int:
    """C{dockerproxy passwd FILE USER}: add or replace USER's bcrypt entry in FILE; the
    password comes from a prompt (twice), or from the first line of stdin when it is not
    a terminal."""
    stdin, stderr = stdin or sys.stdin, stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="dockerproxy passwd", description="Add or replace a user's bcrypt entry."
    )
    parser.add_argument("file", help="the htpasswd file (--auth-htpasswd), created if missing")
    parser.add_argument("user")
    args = parser.parse_args(argv)
    try:
        text = _read(args.file)
        _check(args.file, text, parse_htpasswd)
        verb = "replaced" if args.user in parse_htpasswd(text) else "added"
        password = _password(stdin, ask)
        hashed = hash_password(password.encode("utf-8"))
        updated = with_htpasswd_entry(text, args.user, hashed)
        _write(args.file, updated)
    except (CommandError, ValueError) as e:
        stderr.write(f"dockerproxy passwd: {e}\n")
        return 2
    stderr.write(f"{verb} {args.user!r} in {args.file}; reload the proxy to use it\n")
    return 0


def token_main(
    argv: Sequence[str],
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    """C{dockerproxy token new NAME}: append a random token for NAME to the tokens file
    (C{--file}, else the C{[auth] tokens} of C{--config}, else of C{$DOCKERPROXY_CONFIG}
    or /etc/dockerproxy/config.toml) and print it, once, on stdout."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="dockerproxy token", description="Static tokens.")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="append a random token for NAME and print it")
    new.add_argument("name")
    new.add_argument("--file", help="the tokens file (--auth-tokens), created if missing")
    new.add_argument("--config", help="the proxy's config file, to find [auth] tokens")
    args = parser.parse_args(argv)
    try:
        path = args.file or _tokens_file(args.config or env.get("DOCKERPROXY_CONFIG"))
        text = _read(path)
        _check(path, text, parse_tokens)
        token = new_token()
        _write(path, with_token(text, args.name, token))
    except (CommandError, ValueError) as e:
        stderr.write(f"dockerproxy token: {e}\n")
        return 2
    stdout.write(token + "\n")
    stderr.write(
        f"token {args.name!r} appended to {path} (it is not shown again); "
        "reload the proxy to use it\n"
    )
    return 0


def _password(stdin: TextIO, ask: Callable[[str], str]) -> str:
    if not stdin.isatty():
        line = stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    password = ask("Password: ")
    if ask("Again: ") != password:
        raise CommandError("the passwords differ")
    return password


def _tokens_file(config: str | None) -> str:
    """The C{[auth] tokens} of the proxy's config file."""
    path = config or DEFAULT_CONFIG
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        if config is None:
            raise CommandError("no tokens file: give --file FILE or --config FILE") from None
        raise CommandError(f"cannot read {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CommandError(f"cannot read {path}: {e}") from None
    tokens = (table.get("auth") or {}).get("tokens")
    if not isinstance(tokens, str) or not tokens:
        raise CommandError(f"{path} has no [auth] tokens file: give --file FILE")
    return tokens


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def _check(path: str, text: str, parse: Callable[[str], object]) -> None:
    try:
        parse(text)
    except UserFileError as e:
        where = f"{path} {e}" if e.line is not None else f"{path}: {e}"
        raise CommandError(f"{where} (left unchanged)") from None


def _write(path: str, text: str) -> None:
    """Replace C{path} by C{text} at once, keeping its mode (0600 for a new file), and
    its owner and group when it can: a file made readable by the proxy's group
    (C{root:dockerproxy 0640}) stays readable by the proxy after root edits it."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        before = os.stat(path)
    except FileNotFoundError:
        before = None
    mode = 0o600 if before is None else before.st_mode & 0o777
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".dockerproxy-")
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if before is not None:
            _keep_owner(temporary, before)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as e:
        os.unlink(temporary)
        raise CommandError(f"cannot write {path}: {e.strerror}") from None


def _keep_owner(path: str, before: os.stat_result) -> None:
    """The old file's owner and group on C{path}; as far as this user may give them."""
    for uid, gid in ((before.st_uid, before.st_gid), (-1, before.st_gid)):
        try:
            os.chown(path, uid, gid)
            return
        except PermissionError:
            continue
