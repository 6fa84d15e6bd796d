"""C{dockerproxy warm IMAGE...}: pull images through a running proxy so its cache has them.

Each image is pulled as a client would (L{dockerproxy.warming}), its bodies read
to the end and dropped. The exit status is 0 when every image was warmed, 1 when
any failed (a summary line per image says which and why), 2 for a usage or
config error. A terminal gets a progress bar per image; anything else one line
per image as it ends.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from dockerproxy.imagerefs import (
    DEFAULT_PLATFORMS,
    BadReference,
    ImageRef,
    Platform,
    parse_image,
    parse_platform,
    read_list,
)
from dockerproxy.warming import (
    HTTP,
    Authorize,
    Outcome,
    Progress,
    ProxyClient,
    TokenLogin,
    Warmer,
)

DEFAULT_PROXY = "http://127.0.0.1:5000"
MAX_CONCURRENCY = 64


class UsageError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dockerproxy warm",
        description="Pull images through a running proxy so that its cache has them.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="alpine:3.20, ghcr.io/acme/app:1")
    p.add_argument("--file", action="append", default=[], help="a file of images, one a line")
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        help="os/arch[/variant] of an index to warm (repeatable; default linux/amd64)",
    )
    p.add_argument("--all-platforms", action="store_true", help="every manifest of an index")
    p.add_argument("--concurrency", type=int, default=4, help="blobs at once (default 4)")
    p.add_argument(
        "--proxy",
        help="the proxy's URL (default: the first listener of --config, or "
        f"DOCKERPROXY_CONFIG's, else {DEFAULT_PROXY})",
    )
    p.add_argument(
        "--cache-dir",
        help="no running proxy: warm this cache directory with the proxy's own code, in "
        "this process (the upstreams and cache settings of --config)",
    )
    p.add_argument("--config", help="the proxy's config file, for its listener")
    p.add_argument(
        "--username", help="log in to the proxy as this user (password: DOCKERPROXY_PASSWORD)"
    )
    return p


def images_of(args: argparse.Namespace) -> list[ImageRef]:
    texts = list(args.images)
    for path in args.file:
        try:
            with open(path, encoding="utf-8") as f:
                texts.extend(read_list(f))
        except OSError as e:
            raise UsageError(f"--file: cannot read {path}: {e.strerror}") from None
    if not texts:
        raise UsageError("no images: name some, or give --file")
    try:
        return list(dict.fromkeys(parse_image(t) for t in texts))
    except BadReference as e:
        raise UsageError(str(e)) from None


def platforms_of(args: argparse.Namespace) -> tuple[Platform, ...] | None:
    if args.all_platforms:
        if args.platform:
            raise UsageError("--platform and --all-platforms exclude each other")
        return None
    if not args.platform:
        return DEFAULT_PLATFORMS
    try:
        return tuple(parse_platform(p) for p in args.platform)
    except BadReference as e:
        raise UsageError(f"--platform: {e}") from None


def proxy_of(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """--proxy, else the first listener of the config file, else the default."""
    if args.proxy:
        url: str = args.proxy
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--proxy: must be an http:// or https:// URL, got {url!r}")
        return url.rstrip("/")
    path = args.config or environ.get("DOCKERPROXY_CONFIG")
    if not path:
        return DEFAULT_PROXY
    from dockerproxy.config import ConfigError, load_toml

    try:
        listen = load_toml(path).get("listen", "tcp:5000")
    except ConfigError as e:
        raise UsageError(f"--config: {e.problem}") from None
    first = listen if isinstance(listen, str) else (listen or ["tcp:5000"])[0]
    return listener_url(str(first))


def listener_url(description: str) -> str:
    """A URL reaching a C{tcp:} or C{ssl:} listener from this machine (loopback for a
    listener on every interface)."""
    kind, _, rest = description.partition(":")
    parts = rest.split(":")
    options = dict(p.split("=", 1) for p in parts if "=" in p)
    port = options.get("port") or next((p for p in parts if p.isdigit()), None)
    if kind not in ("tcp", "ssl") or port is None or not port.isdigit():
        raise UsageError(f"cannot reach listener {description!r}: give --proxy")
    host = options.get("interface", "")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if kind == 'ssl' else 'http'}://{host}:{port}"


def direct_of(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """The configuration warming C{--cache-dir} in this process (no proxy, no login)."""
    if args.proxy or args.username:
        raise UsageError("--cache-dir warms without a proxy: --proxy and --username do not apply")
    from dockerproxy.warmdirect import DirectError, direct_config

    try:
        return direct_config(args.config or environ.get("DOCKERPROXY_CONFIG"), args.cache_dir)
    except DirectError as e:
        raise UsageError(str(e)) from None


def basic_of(args: argparse.Namespace, environ: Mapping[str, str]) -> bytes | None:
    if not args.username:
        return None
    password = environ.get("DOCKERPROXY_PASSWORD")
    if password is None:
        password = getpass.getpass(f"password for {args.username}: ")
    pair = f"{args.username}:{password}".encode()
    return b"Basic " + base64.b64encode(pair)


async def warm_images(
    http: HTTP,
    proxy: str,
    images: Sequence[ImageRef],
    platforms: Sequence[Platform] | None,
    concurrency: int,
    basic: bytes | None = None,
    progress: Progress | None = None,
    report: Callable[[Outcome], None] = lambda outcome: None,
    clock: IReactorTime | None = None,
    authorize: Authorize | None = None,
) -> list[Outcome]:
    """Warm each image in turn through the proxy at C{proxy}; C{report} sees each outcome.

    Challenges are answered by C{authorize}, else by a token login (C{basic} if given).
    """
    client = ProxyClient(http, proxy, authorize or TokenLogin(http, basic))
    warmer = Warmer(client, platforms, concurrency, progress, clock)
    outcomes = []
    for image in images:
        outcome = await warmer.warm(image)
        report(outcome)
        outcomes.append(outcome)
    return outcomes


class RichProgress:
    """One bar per image, in bytes, with rich (only on a terminal)."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(file=out),
        )
        self.tasks: dict[ImageRef, Any] = {}

    def _task(self, image: ImageRef) -> Any:
        if image not in self.tasks:
            self.tasks[image] = self.bars.add_task(str(image), total=0)
        return self.tasks[image]

    def add_bytes(self, image: ImageRef, size: int) -> None:
        task = self._task(image)
        total = self.bars.tasks[task].total or 0
        self.bars.update(task, total=total + size)

    def received(self, image: ImageRef, size: int) -> None:
        self.bars.advance(self._task(image), size)


def warm_main(
    argv: Sequence[str],
    out: TextIO | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    out = out or sys.stdout
    args = parser().parse_args(list(argv))
    try:
        images = images_of(args)
        platforms = platforms_of(args)
        if not 1 <= args.concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency: must be from 1 to {MAX_CONCURRENCY}")
        direct = None if args.cache_dir is None else direct_of(args, environ)
        proxy = "" if direct is not None else proxy_of(args, environ)
        basic = None if direct is not None else basic_of(args, environ)
    except UsageError as e:
        sys.stderr.write(f"dockerproxy warm: {e}\n")
        return 2
    bars = RichProgress(out) if out.isatty() else None
    printed: list[Outcome] = []

    def report(outcome: Outcome) -> None:
        if bars is None:
            print(outcome.summary(), file=out, flush=True)
        printed.append(outcome)

    def run(reactor: Any) -> Deferred[Any]:
        import treq

        def through(http: HTTP, url: str, authorize: Authorize | None = None) -> Deferred[Any]:
            return Deferred.fromCoroutine(
                warm_images(
                    http,
                    url,
                    images,
                    platforms,
                    args.concurrency,
                    basic,
                    bars,
                    report,
                    reactor,
                    authorize,
                )
            )

        if direct is not None:
            from dockerproxy.warmdirect import through_own_proxy

            return Deferred.fromCoroutine(through_own_proxy(reactor, direct, through))
        return through(treq, proxy)

    if bars is not None:
        with bars.bars:
            _react(run)
        for outcome in printed:
            print(outcome.summary(), file=out)
    else:
        _react(run)
    failed = [o for o in printed if not o.ok]
    print(f"warmed {len(printed) - len(failed)} of {len(images)} images", file=out)
    return 1 if failed or len(printed) < len(images) else 0


def _react(main: Callable[[Any], Deferred[Any]]) -> None:
    """Run C{main} on the reactor to its end (task.react, without its exit)."""
    from twisted.internet import task

    try:
        task.react(main)
    except SystemExit:
        pass
