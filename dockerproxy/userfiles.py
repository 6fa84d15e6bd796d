"""The files operators keep clients' credentials in, read by the settings and written by
C{dockerproxy passwd} and C{dockerproxy token new}.

- htpasswd: one C{user:hash} a line, bcrypt hashes as C{htpasswd -B} writes them
  (C{$2y$}; C{$2a$} and C{$2b$} too). Any other kind (MD5 C{$apr1$}, C{{SHA}}, crypt,
  plain text) is refused naming the line and the kind, never the hash: those are
  cheap to brute-force, and a proxy on a public address is scanned within hours.
- tokens: TOML, C{name = "token"} a line; a token is the password of any user name or
  a bearer token, and whoever uses it is C{name}.
"""

from __future__ import annotations

import json
import re
import secrets
import tomllib

# bcrypt works on the first 72 bytes of a password: htpasswd -B ignores the rest.
BCRYPT_MAX_PASSWORD = 72
# Cost of the hashes `dockerproxy passwd` writes (htpasswd -B defaults to 5; each step doubles
# the work: 60 ms at 10 on one core, spent on the proxy's thread pool at each login).
BCRYPT_ROUNDS = 10
# A static token opens the proxy under any user name: a short one could be guessed.
MIN_TOKEN_LENGTH = 16

_BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")
# Names end up in logs and metrics: printable ASCII, no spaces, no colon (htpasswd's separator).
_NAME_RE = re.compile(r"[!-9;-~]{1,128}")
_TOKEN_RE = re.compile(r"[!-~]+")
_OTHER_KINDS = (
    ("$apr1$", "an Apache MD5 hash"),
    ("$1$", "an MD5 crypt hash"),
    ("$5$", "a SHA-256 crypt hash"),
    ("$6$", "a SHA-512 crypt hash"),
    ("{SHA}", "a SHA-1 hash"),
    ("$2", "a malformed bcrypt hash"),
)


class UserFileError(ValueError):
    """A problem with one line of a credentials file (C{line} None: the whole file)."""

    def __init__(self, line: int | None, problem: str) -> None:
        super().__init__(problem if line is None else f"line {line}: {problem}")
        self.line = line


def is_valid_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None


def parse_htpasswd(text: str) -> dict[str, bytes]:
    """C{user -> bcrypt hash}; blank lines and C{#} comments are skipped."""
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not is_valid_name(user):
            raise UserFileError(number, "expected USER:HASH with a user name of printable ASCII")
        if _BCRYPT_RE.fullmatch(hashed) is None:
            raise UserFileError(
                number,
                f"user {user!r} has {hash_kind(hashed)}: only bcrypt entries are supported "
                "(htpasswd -B, or dockerproxy passwd)",
            )
        if user in users:
            raise UserFileError(number, f"user {user!r} appears twice")
        users[user] = hashed.encode("ascii")
    return users


def hash_kind(hashed: str) -> str:
    """What a non-bcrypt htpasswd entry is, for an error that never quotes it."""
    for prefix, kind in _OTHER_KINDS:
        if hashed.startswith(prefix):
            return kind
    return "a crypt hash or a plain-text password"


def parse_tokens(text: str) -> dict[str, str]:
    """C{name -> token} from the tokens file's TOML."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib names the line and column, never the value.
        raise UserFileError(None, f"not valid TOML: {e}") from None
    tokens: dict[str, str] = {}
    owners: dict[str, str] = {}
    for name, token in table.items():
        if not is_valid_name(name):
            raise UserFileError(None, f"{name!r} is not a usable name (printable ASCII, no ':')")
        if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
            raise UserFileError(None, f"the token of {name!r} must be a string of printable ASCII")
        if len(token) < MIN_TOKEN_LENGTH:
            raise UserFileError(
                None, f"the token of {name!r} is shorter than {MIN_TOKEN_LENGTH} characters"
            )
        if token in owners:
            raise UserFileError(None, f"{name!r} and {owners[token]!r} have the same token")
        owners[token] = name
        tokens[name] = token
    return tokens


def hash_password(password: bytes, rounds: int = BCRYPT_ROUNDS) -> bytes:
    """A bcrypt hash as C{htpasswd -B} writes it (C{$2y$}); C{ValueError} for a password
    bcrypt would silently cut short."""
    import bcrypt

    if len(password) > BCRYPT_MAX_PASSWORD:
        raise ValueError(f"a password may be at most {BCRYPT_MAX_PASSWORD} bytes long")
    if not password:
        raise ValueError("the password is empty")
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds))
    return b"$2y$" + hashed[4:]


def with_htpasswd_entry(text: str, user: str, hashed: bytes) -> str:
    """C{text} with C{user}'s line replaced by (or, if it has none, followed by) C{user:hashed}."""
    if not is_valid_name(user):
        raise ValueError(f"{user!r} is not a usable user name (printable ASCII, no ':')")
    entry = f"{user}:{hashed.decode('ascii')}"
    lines = text.splitlines()
    replaced = False
    for index, line in enumerate(lines):
        if line.strip().partition(":")[0] == user and not line.lstrip().startswith("#"):
            lines[index] = entry
            replaced = True
    if not replaced:
        lines.append(entry)
    return "\n".join(lines) + "\n"


def new_token() -> str:
    """A random static token: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def with_token(text: str, name: str, token: str) -> str:
    """C{text} (a tokens file) with C{name = "token"} appended; C{ValueError} if C{name} has
    one already or the result would not parse."""
    if not is_valid_name(name):
        raise ValueError(f"{name!r} is not a usable name (printable ASCII, no ':')")
    if name in parse_tokens(text):
        raise ValueError(f"{name!r} already has a token")
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
    prefix = text if not text or text.endswith("\n") else text + "\n"
    result = f"{prefix}{key} = {json.dumps(token)}\n"
    parse_tokens(result)
    return result
