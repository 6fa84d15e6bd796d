"""Composite upstreams for the fixtures: registry + token server (+ CDN) + seeded images.

An ``Upstream`` bundles what a proxy test needs to point the proxy at an upstream and to check
afterwards what reached it (registry access log, token requests, CDN requests).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import images, seeds
from tests.harness.cdn import Cdn, start_cdn
from tests.harness.images import ImageRecord, IndexRecord
from tests.harness.ports import free_port
from tests.harness.registry import LoggedRequest, Registry, start_registry
from tests.harness.tokenauth import TokenServer, start_tokenserver

Creds = tuple[str, str]
# seed(registry, workdir, pusher_creds) -> {"short name": record}; becomes Upstream.images.
Seeder = Callable[[Registry, Path, Creds | None], dict[str, ImageRecord | IndexRecord]]


@dataclass(frozen=True)
class LogMark:
    """Positions in every log of an upstream; pass to ``requests(since=...)`` and friends."""

    registry: int = 0
    tokenserver: int = 0
    cdn: int = 0


@dataclass
class Upstream:
    """A running upstream registry as the tests see it.

    ``images`` maps short names ("alpine", "multiarch", "secret", "docker", "dockerlist",
    "plain", depending on the seeder) to records of what the registry serves.
    ``pusher``/``reader`` are (user, password) pairs, None without auth.
    """

    registry: Registry
    tokenserver: TokenServer | None = None
    cdn: Cdn | None = None
    images: dict[str, ImageRecord | IndexRecord] = field(default_factory=dict)
    pusher: Creds | None = None
    reader: Creds | None = None

    # -- where it is ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the registry root (``/v2/`` lives below it)."""
        return self.registry.url

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` for image references such as ``docker://HOST/library/alpine:3.20``."""
        return self.registry.host

    @property
    def port(self) -> int:
        return self.registry.port

    @property
    def service(self) -> str | None:
        """The token ``service`` (JWT audience), None without auth."""
        return self.tokenserver.service if self.tokenserver else None

    @property
    def realm(self) -> str | None:
        """The token endpoint URL the registry's 401 challenge names, None without auth."""
        return self.tokenserver.realm if self.tokenserver else None

    @property
    def storage(self) -> Path:
        return self.registry.storage

    # -- what happened ------------------------------------------------------------------------

    def log_mark(self) -> LogMark:
        """Remember the current end of every log, to look only at requests made after it."""
        return LogMark(
            self.registry.log_mark(),
            self.tokenserver.log_mark() if self.tokenserver else 0,
            self.cdn.log_mark() if self.cdn else 0,
        )

    def requests(self, since: LogMark | None = None, settle: float = 0.2) -> list[tuple[str, str]]:
        """(method, path-with-query) of every request the registry served after ``since``."""
        return self.registry.requests((since or LogMark()).registry, settle)

    def responses(self, since: LogMark | None = None, settle: float = 0.2) -> list[LoggedRequest]:
        """Registry access-log entries with status, size and user agent."""
        return self.registry.responses((since or LogMark()).registry, settle)

    def count(
        self,
        method: str | None = None,
        pattern: str = "",
        since: LogMark | None = None,
        settle: float = 0.2,
    ) -> int:
        """Registry requests matching ``method`` and regex ``pattern`` after ``since``."""
        return self.registry.count(method, pattern, (since or LogMark()).registry, settle)

    def token_requests(self, since: LogMark | None = None) -> list[dict[str, Any]]:
        """Token-server log records (method, path, authorization, user, scopes, granted...)."""
        if self.tokenserver is None:
            return []
        return self.tokenserver.requests((since or LogMark()).tokenserver)

    def cdn_requests(
        self, since: LogMark | None = None, settle: float = 0.2
    ) -> list[dict[str, Any]]:
        """CDN log records (method, path, authorization, range, status, sent)."""
        if self.cdn is None:
            return []
        return self.cdn.requests((since or LogMark()).cdn, settle)

    def token(self, scopes: list[str], creds: Creds | None = None) -> str | None:
        """A token straight from the token server (None without auth)."""
        return self.registry.token(scopes, creds)

    def log_tails(self, lines: int = 30) -> str:
        """The end of each server log, for assertion messages."""
        parts = [self.registry.log_tail(lines)]
        if self.tokenserver:
            parts.append(self.tokenserver.process.log_tail(lines))
        if self.cdn:
            parts.append(self.cdn.process.log_tail(lines))
        return "\n".join(parts)


def default_policy(pusher: Creds, reader: Creds) -> dict[str, Any]:
    """library/* and public/* are anonymous; reader may pull private/*; pusher does anything."""
    return {
        "anonymous": {"pull": ["library/*", "public/*"]},
        "users": {
            pusher[0]: {"password": pusher[1], "pull": ["*"], "push": ["*"], "*": ["*"],
                        "admin": True},
            reader[0]: {"password": reader[1], "pull": ["private/*"]},
        },
    }  # fmt: skip


def make_creds() -> tuple[Creds, Creds]:
    """Fresh (pusher, reader) credentials for one test session."""
    return ("pusher", "push-" + secrets.token_hex(8)), ("reader", "read-" + secrets.token_hex(8))


def start_default_tokenserver(
    workdir: Path, stack: contextlib.ExitStack, pusher: Creds, reader: Creds, **kwargs: Any
) -> TokenServer:
    """Start a token server with the default policy; ``stack`` stops it."""
    ts = start_tokenserver(workdir / "tokenserver", default_policy(pusher, reader), **kwargs)
    stack.callback(ts.stop)
    return ts


def start_upstream(
    workdir: Path,
    stack: contextlib.ExitStack,
    tokenserver: TokenServer | None,
    pusher: Creds | None,
    reader: Creds | None,
    seed: Seeder,
    redirect: bool = False,
) -> Upstream:
    """Start a registry (token auth when ``tokenserver`` is given, optionally with a CDN).

    Everything started is registered on ``stack`` so a failure during seeding still stops it.
    """
    cdn_port = free_port() if redirect else None
    baseurl = f"http://127.0.0.1:{cdn_port}/" if redirect else None
    registry = start_registry(workdir / "registry", tokenserver, baseurl)
    stack.callback(registry.stop)
    cdn = None
    if redirect:
        cdn = start_cdn(workdir / "cdn", registry.storage, port=cdn_port)
        stack.callback(cdn.stop)
    upstream = Upstream(registry, tokenserver, cdn, pusher=pusher, reader=reader)
    upstream.images = seed(registry, workdir / "layouts", pusher)
    return upstream


# -- seeders (Seeder functions for start_upstream) ----------------------------------------------


def seed_standard(registry: Registry, workdir: Path, creds: Creds | None) -> dict[str, Any]:
    """The ``upstream`` fixture's images: OCI alpine/multiarch/secret plus Docker-format ones."""
    return {
        "alpine": seeds.seed_alpine(registry, workdir, creds),
        "multiarch": seeds.seed_multiarch(registry, workdir, creds),
        "secret": seeds.seed_secret(registry, workdir, creds),
        "docker": seeds.seed_docker_image(registry, workdir, creds),
        "dockerlist": seeds.seed_docker_list(registry, workdir, creds),
    }


def seed_plain(registry: Registry, workdir: Path, creds: Creds | None) -> dict[str, Any]:
    """``library/plain:1`` ("plain") for the registry without auth."""
    layers = [
        {"bin/plain": images.pseudo_random(64 * 1024, "plain-bin")},
        {"etc/plain-release": b"1\n"},
    ]
    return {"plain": images.push_image(registry, workdir, "library/plain", "1", layers, creds)}


def seed_alpine_only(registry: Registry, workdir: Path, creds: Creds | None) -> dict[str, Any]:
    """Just ``library/alpine:3.20`` ("alpine"): same content, same digests as in ``upstream``."""
    return {"alpine": seeds.seed_alpine(registry, workdir, creds)}


class UpstreamFactory:
    """Starts private upstreams for one test, all stopped when ``stack`` closes.

    This is what the ``make_upstream`` fixture hands out.
    """

    def __init__(self, stack: contextlib.ExitStack, workdir: Path) -> None:
        self._stack = stack
        self._workdir = workdir
        self._count = 0

    def __call__(
        self,
        auth: bool = True,
        redirect: bool = False,
        seed: Seeder | None = None,
        **tokenserver_options: Any,
    ) -> Upstream:
        """A fresh upstream: token auth (own token server) unless ``auth=False``, optional CDN.

        ``seed(registry, workdir, pusher_creds)`` returns the ``images`` dict (default
        ``seed_alpine_only``). ``tokenserver_options`` go to ``start_tokenserver``:
        ``expires_in``, ``header`` ("kid", "x5c", "both"), ``key_kind`` ("rsa", "ec"),
        ``service``, ``issuer``.
        """
        self._count += 1
        workdir = self._workdir / f"upstream{self._count}"
        pusher, reader = make_creds()
        ts = None
        if auth:
            ts = start_default_tokenserver(
                workdir, self._stack, pusher, reader, **tokenserver_options
            )
        return start_upstream(
            workdir,
            self._stack,
            ts,
            pusher if auth else None,
            reader if auth else None,
            seed or seed_alpine_only,
            redirect=redirect,
        )
