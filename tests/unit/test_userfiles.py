"""The htpasswd and tokens formats (L{dockerproxy.userfiles}): what is read, what is refused
(never quoting a hash or a token), and what C{dockerproxy passwd} / C{token new} write."""

from __future__ import annotations

import bcrypt
import pytest

from dockerproxy.userfiles import (
    MIN_TOKEN_LENGTH,
    UserFileError,
    hash_password,
    new_token,
    parse_htpasswd,
    parse_tokens,
    with_htpasswd_entry,
    with_token,
)

# Written by Apache's `htpasswd -nbB alice secret` (apache2-utils 2.4.71).
HTPASSWD_B_LINE = "alice:$2y$05$05ByAKTzPs19.Thm8Ow9LewB4MLMAksdToka2vd18L6/xpi6zAZdW"
TOKEN = "t0k3n-" + "x" * 20


def test_htpasswd_b_entries_are_read_and_check_with_bcrypt() -> None:
    users = parse_htpasswd(f"# users\n\n{HTPASSWD_B_LINE}\n")
    assert list(users) == ["alice"]
    assert bcrypt.checkpw(b"secret", users["alice"])
    assert not bcrypt.checkpw(b"wrong", users["alice"])


def test_2a_and_2b_hashes_are_accepted() -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    assert hashed.startswith("$2b$")
    users = parse_htpasswd(f"bob:{hashed}\ncarol:$2a${hashed[4:]}\n")
    assert set(users) == {"bob", "carol"}


@pytest.mark.parametrize(
    ("hashed", "kind"),
    [
        ("$apr1$abcdefgh$0123456789abcdefghijkl", "an Apache MD5 hash"),
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "a SHA-1 hash"),
        ("$6$salt$" + "a" * 86, "a SHA-512 crypt hash"),
        ("$5$salt$" + "a" * 43, "a SHA-256 crypt hash"),
        ("$1$salt$" + "a" * 22, "an MD5 crypt hash"),
        ("$2y$05$tooShort", "a malformed bcrypt hash"),
        ("rl0hJZ7Yn0Q1M", "a crypt hash or a plain-text password"),
        ("hunter2", "a crypt hash or a plain-text password"),
    ],
)
def test_other_hash_kinds_are_refused_by_line_and_kind_never_quoted(hashed: str, kind: str) -> None:
    with pytest.raises(UserFileError) as caught:
        parse_htpasswd(f"{HTPASSWD_B_LINE}\n\nbob:{hashed}\n")
    message = str(caught.value)
    assert caught.value.line == 3
    assert message.startswith("line 3: user 'bob' has " + kind)
    assert "htpasswd -B" in message
    assert hashed not in message
    assert "\n" not in message


def test_malformed_lines_and_duplicates_are_refused() -> None:
    with pytest.raises(UserFileError, match="line 1: expected USER:HASH"):
        parse_htpasswd("no colon here\n")
    with pytest.raises(UserFileError, match="line 1: expected USER:HASH"):
        parse_htpasswd(":" + HTPASSWD_B_LINE.partition(":")[2])
    with pytest.raises(UserFileError, match="line 2: user 'alice' appears twice"):
        parse_htpasswd(f"{HTPASSWD_B_LINE}\n{HTPASSWD_B_LINE}\n")


def test_tokens_file_is_name_equals_token() -> None:
    text = f'ci = "{TOKEN}"\n"bot@ci.example" = "{TOKEN}2"\n'
    assert parse_tokens(text) == {"ci": TOKEN, "bot@ci.example": TOKEN + "2"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('ci = "short"\n', f"shorter than {MIN_TOKEN_LENGTH} characters"),
        ("ci = 12345678901234567890\n", "must be a string of printable ASCII"),
        ('ci = "with a space in the token"\n', "must be a string of printable ASCII"),
        (f'a = "{TOKEN}"\nb = "{TOKEN}"\n', "'b' and 'a' have the same token"),
        (f'"a:b" = "{TOKEN}"\n', "not a usable name"),
        ('ci = "unterminated\n', "not valid TOML"),
    ],
)
def test_bad_tokens_files_are_refused_without_quoting_a_token(text: str, problem: str) -> None:
    with pytest.raises(UserFileError) as caught:
        parse_tokens(text)
    assert problem in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert "with a space" not in str(caught.value)


def test_hash_password_writes_what_htpasswd_b_writes() -> None:
    hashed = hash_password(b"pw", rounds=4)
    assert hashed.startswith(b"$2y$04$")
    assert parse_htpasswd("u:" + hashed.decode())["u"] == hashed
    assert bcrypt.checkpw(b"pw", hashed)


def test_hash_password_refuses_what_bcrypt_would_cut_short_or_empty() -> None:
    with pytest.raises(ValueError, match="at most 72 bytes"):
        hash_password(b"x" * 73, rounds=4)
    with pytest.raises(ValueError, match="empty"):
        hash_password(b"", rounds=4)


def test_htpasswd_entry_is_replaced_or_appended() -> None:
    text = f"# comment\n{HTPASSWD_B_LINE}\nbob:$2y$04$" + "b" * 53 + "\n"
    replaced = with_htpasswd_entry(text, "alice", b"$2y$04$" + b"c" * 53)
    assert replaced.splitlines() == [
        "# comment",
        "alice:$2y$04$" + "c" * 53,
        "bob:$2y$04$" + "b" * 53,
    ]
    appended = with_htpasswd_entry(replaced, "dave", b"$2y$04$" + b"d" * 53)
    assert set(parse_htpasswd(appended)) == {"alice", "bob", "dave"}
    assert with_htpasswd_entry("", "eve", b"$2y$04$" + b"e" * 53) == "eve:$2y$04$" + "e" * 53 + "\n"
    with pytest.raises(ValueError, match="not a usable user name"):
        with_htpasswd_entry(text, "a:b", b"x")


def test_new_tokens_are_long_random_and_appended_once() -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) >= 40
    text = with_token("", "ci", first)
    text = with_token(text.rstrip("\n"), "bot@ci.example", second)
    assert parse_tokens(text) == {"ci": first, "bot@ci.example": second}
    with pytest.raises(ValueError, match="'ci' already has a token"):
        with_token(text, "ci", new_token())
