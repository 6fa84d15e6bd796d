"""Clients authenticating to the proxy: C{[auth]}, C{--auth-htpasswd}, C{--auth-tokens},
C{--anonymous-pull}, and C{--state-dir} (where the token signing key lives).

The htpasswd and tokens files are read here, so a bad line is a config error at start
and on reload (the old users stay), never a surprise at a client's login.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dockerproxy.config.checks import ConfigError, check_file, check_seconds, check_table
from dockerproxy.patterns import RepositoryPattern
from dockerproxy.statedir import default_state_dir
from dockerproxy.userfiles import UserFileError, parse_htpasswd, parse_tokens

_KEYS = {"htpasswd", "tokens", "anonymous_pull", "fail_delay", "token_ttl", "admins"}
# [auth] key -> its command-line option
OPTIONS = {
    "htpasswd": "--auth-htpasswd",
    "tokens": "--auth-tokens",
    "anonymous_pull": "--anonymous-pull",
}
MAX_FAIL_DELAY = 60.0


@dataclass(frozen=True)
class AuthSettings:
    """Who may use the proxy. With no htpasswd and no tokens file, nobody is asked (the
    clients' own credentials go to the upstreams, as without this table)."""

    htpasswd: str | None = None  # the files, as configured
    tokens: str | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # name -> bcrypt hash
    static_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)  # name -> token
    # Repositories clients without credentials may still pull (NAME/REPOSITORY globs).
    anonymous_pull: tuple[RepositoryPattern, ...] = ()
    fail_delay: float = 1.0  # seconds every failed login waits for its answer
    token_ttl: float = 300.0  # seconds the proxy's own tokens are valid (expires_in)
    admins: tuple[str, ...] = ()  # users allowed on an admin listener beyond loopback

    @property
    def enabled(self) -> bool:
        return self.htpasswd is not None or self.tokens is not None

    def knows(self, name: str) -> bool:
        return name in self.users or name in self.static_tokens


def auth_config(table: Any, cli: Mapping[str, Any]) -> AuthSettings:
    """C{[auth]} and the options C{auth_htpasswd}, C{auth_tokens}, C{anonymous_pull}."""
    table = check_table("auth", table, _KEYS)
    htpasswd = _file("htpasswd", table, cli.get("auth_htpasswd"))
    tokens = _file("tokens", table, cli.get("auth_tokens"))
    settings = AuthSettings(
        htpasswd=htpasswd[0] if htpasswd else None,
        tokens=tokens[0] if tokens else None,
        users=_read("htpasswd", htpasswd, parse_htpasswd) if htpasswd else {},
        static_tokens=_read("tokens", tokens, parse_tokens) if tokens else {},
        anonymous_pull=_patterns(table, cli),
        fail_delay=_fail_delay(table.get("fail_delay")),
        token_ttl=(
            check_seconds("auth.token_ttl", table["token_ttl"], maximum=86400)
            if "token_ttl" in table
            else AuthSettings.token_ttl
        ),
        admins=_admins(table.get("admins", [])),
    )
    _check_coherent(settings)
    return settings


def state_dir_config(toml: Mapping[str, Any], cli: Mapping[str, Any]) -> str:
    """C{--state-dir} / C{state_dir}: created, with the signing key, only when clients
    authenticate."""
    for key, value in (("--state-dir", cli.get("state_dir")), ("state_dir", toml.get("state_dir"))):
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ConfigError(key, "must be a directory path")
            return value
    return default_state_dir()


def _file(name: str, table: Mapping[str, Any], option: Any) -> tuple[str, str] | None:
    """(path, the key it was given as), checked to exist."""
    key, value = (
        (OPTIONS[name], option) if option is not None else (f"auth.{name}", table.get(name))
    )
    if value is None:
        return None
    return check_file(key, value), key


def _read(name: str, given: tuple[str, str], parse: Any) -> Any:
    path, key = given
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(key, f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return parse(text)
    except UserFileError as e:
        raise ConfigError(key, f"{path} {e}" if e.line is not None else f"{path}: {e}") from None


def _patterns(table: Mapping[str, Any], cli: Mapping[str, Any]) -> tuple[RepositoryPattern, ...]:
    key, value = (
        ("--anonymous-pull", list(cli["anonymous_pull"]))
        if cli.get("anonymous_pull")
        else ("auth.anonymous_pull", table.get("anonymous_pull", []))
    )
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a list of patterns such as docker.io/library/*")
    patterns = []
    for text in value:
        try:
            patterns.append(RepositoryPattern(text))
        except ValueError:
            raise ConfigError(
                key, f"must be a pattern such as docker.io/library/*, got {text!r}"
            ) from None
    return tuple(patterns)


def _fail_delay(value: Any) -> float:
    if value is None:
        return AuthSettings.fail_delay
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError("auth.fail_delay", f"must be a number of seconds, got {value!r}")
    if value > MAX_FAIL_DELAY:
        raise ConfigError("auth.fail_delay", f"must be at most {MAX_FAIL_DELAY:g} seconds")
    return float(value)


def _admins(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError("auth.admins", "must be a list of user names")
    return tuple(value)


def _check_coherent(settings: AuthSettings) -> None:
    """Settings that mean nothing without users are refused rather than silently ignored."""
    if settings.enabled:
        for admin in settings.admins:
            if not settings.knows(admin):
                raise ConfigError("auth.admins", f"{admin!r} is neither a user nor a token name")
        return
    if settings.anonymous_pull:
        raise ConfigError(
            "--anonymous-pull / auth.anonymous_pull",
            "needs --auth-htpasswd or --auth-tokens (without them every pull is anonymous)",
        )
    if settings.admins:
        raise ConfigError("auth.admins", "needs --auth-htpasswd or --auth-tokens")
