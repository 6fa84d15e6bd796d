"""The C{dockerproxy} command: C{serve}, C{check-config}, C{cache}, C{passwd}, C{token},
C{warm}.

C{dockerproxy serve [options]} is C{twistd --nodaemon --pidfile= dockerproxy
[options]}, run in this process by twistd's own machinery (the same plugin, the
same options, the same exit statuses). C{cache} is C{python -m dockerproxy.cache}.
C{passwd} and C{token} write the users and tokens files (L{dockerproxy.usercli}).
C{warm} pulls images through a running proxy (L{dockerproxy.warmcli}).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from dockerproxy import __version__
from dockerproxy.config import ConfigError, build_config, load_toml
from dockerproxy.config.show import show_settings

# Subcommands other modules provide: NAME -> (module, function taking the arguments
# after NAME and returning an exit status, what it does).
# Subcommands another module runs, with the help line each shows.
PROVIDED: dict[str, str] = {
    "passwd": "FILE USER: add or replace USER's bcrypt entry in an htpasswd FILE",
    "token": "new NAME: append a random token for NAME to the tokens file",
    "warm": "IMAGE... [--platform P | --all-platforms] [--proxy URL]: pull images "
    "through a running proxy into its cache",
}


def serve(argv: Sequence[str]) -> int:
    """Run the proxy in the foreground as C{twistd -n dockerproxy} would."""
    from twisted.python import usage
    from twisted.scripts.twistd import ServerOptions, runApp

    options = ServerOptions()
    try:
        options.parseOptions(["--nodaemon", "--pidfile=", "dockerproxy", *argv])
    except usage.UsageError as e:
        sys.stderr.write(f"dockerproxy: {e}\n")
        return 2
    runApp(options)  # exits with the signal's status if one killed it mid-work
    return 0


def check_config(path: str, out: TextIO) -> int:
    """Validate C{path} as the proxy would at start (listen endpoints and TLS files
    included) and print the effective settings, secrets masked; exit 2 on an error."""
    from dockerproxy.tap import check_endpoint

    try:
        config = build_config(load_toml(path), {})
        for endpoint in config.listen:
            check_endpoint(endpoint)
        for endpoint in config.admin.listen:
            check_endpoint(endpoint, "admin.listen")
    except ConfigError as e:
        # The file is the argument here, not --config.
        where = "check-config" if e.key == "--config" else e.key
        sys.stderr.write(f"dockerproxy: {where}: {e.problem}\n")
        return 2
    for line in show_settings(config):
        print(line, file=out)
    return 0


def cache(argv: Sequence[str]) -> int:
    from dockerproxy.cache.admin import main

    return main(list(argv), out=sys.stdout)


def passwd(argv: Sequence[str]) -> int:
    from dockerproxy.usercli import passwd_main

    return passwd_main(list(argv))


def token(argv: Sequence[str]) -> int:
    from dockerproxy.usercli import token_main

    return token_main(list(argv))


def warm(argv: Sequence[str]) -> int:
    from dockerproxy.warmcli import warm_main

    return warm_main(argv)


# Subcommands whose arguments go, untouched, to what runs them.
PASS_THROUGH: dict[str, Callable[[Sequence[str]], int]] = {
    "serve": serve,
    "cache": cache,
    "passwd": passwd,
    "token": token,
    "warm": warm,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="dockerproxy", description="A Docker / OCI registry pull proxy and mirror."
    )
    top.add_argument("--version", action="version", version=f"dockerproxy {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "serve", help="[options]: run the proxy in the foreground (serve --help lists them)"
    )
    check = commands.add_parser(
        "check-config", help="FILE: check a config file, print the settings (secrets masked)"
    )
    check.add_argument("file")
    commands.add_parser("cache", help="stats|verify|prune --cache-dir DIR: look after a cache")
    for name, description in PROVIDED.items():
        commands.add_parser(name, help=description)
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in PASS_THROUGH:
        return PASS_THROUGH[args[0]](args[1:])
    top = parser()
    parsed = top.parse_args(args)
    if parsed.command == "check-config":
        return check_config(parsed.file, out or sys.stdout)
    top.print_help(sys.stderr)
    return 2
