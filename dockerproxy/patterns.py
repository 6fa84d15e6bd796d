"""Repository patterns operators write: C{docker.io/library/*}, C{ghcr.io/acme/**}.

A pattern matches C{NAME/REPOSITORY}, where NAME is the registry's name as
configured (C{docker.io}, C{ghcr.io}, a C{--registry} name; for C{--upstream URL}
its C{host[:port]}) and REPOSITORY the name upstream (C{library/alpine}). C{*}
matches within one path component, C{**} across them; nothing else is special.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RepositoryPattern:
    text: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", compile_pattern(self.text))

    def matches(self, registry: str, repository: str) -> bool:
        return self._regex.fullmatch(f"{registry}/{repository}") is not None


def compile_pattern(text: str) -> re.Pattern[str]:
    """C{*} is any run of characters but C{/}, C{**} any run at all; C{ValueError} for an
    empty pattern or one with characters no repository name has."""
    if not text or not re.fullmatch(r"[A-Za-z0-9._:/*-]+", text):
        raise ValueError(f"not a repository pattern: {text!r}")
    parts = re.split(r"(\*\*|\*)", text)
    regex = "".join(
        "[^/]*" if part == "*" else ".*" if part == "**" else re.escape(part) for part in parts
    )
    return re.compile(regex)


def any_matches(patterns: tuple[RepositoryPattern, ...], registry: str, repository: str) -> bool:
    return any(pattern.matches(registry, repository) for pattern in patterns)
