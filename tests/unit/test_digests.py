"""The digest value type: what it accepts, and what it refuses to hold."""

from __future__ import annotations

import hashlib

import pytest

from dockerproxy.digests import ALGORITHMS, Digest, of, parse, parse_or_none


@pytest.mark.parametrize(
    ("text", "algorithm", "hexa"),
    [
        ("sha256:" + "a" * 64, "sha256", "a" * 64),
        ("sha384:" + "1" * 96, "sha384", "1" * 96),
        ("sha512:" + "0" * 128, "sha512", "0" * 128),
    ],
)
def test_known_algorithms(text: str, algorithm: str, hexa: str) -> None:
    digest = parse(text)
    assert (digest.algorithm, digest.hex) == (algorithm, hexa)
    assert str(digest) == text
    assert f"{digest}" == text


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 64,
        "sha384:" + "a" * 64,
        "sha1:" + "a" * 40,
        "sha256",
        "sha256:../" + "a" * 61,
        "md5:" + "a" * 32,
        ":" + "a" * 64,
        "sha256:" + "a" * 63 + "/",
        "SHA256:" + "a" * 64,
        "foo+bar:abc=",
        "",
    ],
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse(bad)
    assert parse_or_none(bad) is None


def test_a_digest_cannot_be_made_invalid_directly() -> None:
    with pytest.raises(ValueError):
        Digest("sha256", "../../etc/passwd")
    with pytest.raises(ValueError):
        Digest("md5", "a" * 32)


def test_of_hashes_with_each_algorithm_and_matches() -> None:
    for algorithm in ALGORITHMS:
        digest = of(b"content", algorithm)
        assert digest.hex == hashlib.new(algorithm, b"content").hexdigest()
        assert digest.matches(b"content")
        assert not digest.matches(b"other")
        hasher = digest.hasher()
        hasher.update(b"content")
        assert hasher.hexdigest() == digest.hex


def test_digests_are_values() -> None:
    assert parse("sha256:" + "a" * 64) == parse("sha256:" + "a" * 64)
    assert len({parse("sha256:" + "a" * 64), parse("sha256:" + "a" * 64)}) == 1
    assert parse("sha256:" + "a" * 64) != "sha256:" + "a" * 64
