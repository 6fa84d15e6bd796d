"""Repository patterns: C{*} within one path component, C{**} across them."""

from __future__ import annotations

import pytest

from dockerproxy.patterns import RepositoryPattern, any_matches


@pytest.mark.parametrize(
    ("pattern", "registry", "repository", "expected"),
    [
        ("docker.io/library/*", "docker.io", "library/alpine", True),
        ("docker.io/library/*", "docker.io", "library/a/b", False),
        ("docker.io/library/*", "ghcr.io", "library/alpine", False),
        ("docker.io/**", "docker.io", "library/a/b", True),
        ("ghcr.io/acme/**", "ghcr.io", "acme/tools/cli", True),
        ("ghcr.io/acme/**", "ghcr.io", "acmex/tools", False),
        ("127.0.0.1:5000/*/x", "127.0.0.1:5000", "team/x", True),
        ("*/library/alpine", "quay.io", "library/alpine", True),
        ("docker.io/library/alpine", "docker.io", "library/alpine", True),
        ("docker.io/library/alp.ne", "docker.io", "library/alpine", False),
    ],
)
def test_matches(pattern: str, registry: str, repository: str, expected: bool) -> None:
    assert RepositoryPattern(pattern).matches(registry, repository) is expected


@pytest.mark.parametrize("bad", ["", "a b", "x?", "docker.io/[ab]", "a/(b)"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        RepositoryPattern(bad)


def test_any_matches() -> None:
    patterns = (RepositoryPattern("a.test/x"), RepositoryPattern("b.test/**"))
    assert any_matches(patterns, "b.test", "y/z")
    assert not any_matches(patterns, "a.test", "y")
    assert not any_matches((), "a.test", "x")
