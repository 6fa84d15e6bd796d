"""SIGHUP reloads the configuration (C{systemctl reload}), and no pull is dropped.

On SIGHUP, L{Reloads} reads the configuration again as it was read at start (the
C{--config} file merged with the original command line, which still wins) and
checks it. A configuration that fails its checks is refused with one log line
naming the key, and the running one stays. A valid one is handed to every
registered reloader in turn, each an C{apply(config)} that takes what it owns
from it: the Site its access settings and client limits, the listeners their
certificates, the log its format... Registering one is a call::

    reloads.register(thing.apply)

Settings that cannot change under a running process (the listeners, the
upstreams and routes, the cache) keep their values; L{RestartNeeded} says in
one line which of them changed.

Python runs a signal handler in the main thread between two bytecodes, possibly
in the middle of the reactor's own work, so the handler only asks the reactor,
through C{callFromThread}, to reload at its next turn.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from dockerproxy.config import Config, ConfigError

log = Logger()


def checked(load: Callable[[], Config]) -> Config | None:
    """The configuration C{load} reads for a reload, or None if it is refused (one line
    in the log says why, and the running configuration stays)."""
    try:
        return load()
    except ConfigError as e:
        log.error("reload refused, the running configuration stays: {error}", error=str(e))
    except Exception:
        log.failure("reload refused, the running configuration stays")
    return None


Reloader = Callable[[Config], None]
Handler = Callable[[int, FrameType | None], Any] | int | None
# signal.signal, or a fake in tests: installs a handler, returns the one it replaces.
InstallHandler = Callable[[int, Any], Handler]


class Reloads(service.Service):
    """Installs the SIGHUP handler while it runs, and reloads with C{load} (see the module)."""

    name = "reload"

    def __init__(
        self,
        reactor: IReactorFromThreads,
        load: Callable[[], Config],
        install: InstallHandler = signal.signal,
    ) -> None:
        self.reactor = reactor
        self.load = load
        self.install = install
        self.reloaders: list[Reloader] = []
        self._previous: Handler = None
        self._installed = False

    def register(self, reloader: Reloader) -> None:
        """Call C{reloader(config)} with every valid configuration a reload reads."""
        self.reloaders.append(reloader)

    def startService(self) -> None:
        super().startService()
        self._previous = self.install(signal.SIGHUP, self._signalled)
        self._installed = True

    def stopService(self) -> None:
        super().stopService()
        if self._installed:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            self.install(signal.SIGHUP, previous)
            self._installed = False

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> Config | None:
        """Read and check the configuration, then apply it; None if it was refused."""
        config = checked(self.load)
        if config is None:
            return None
        for reloader in self.reloaders:
            try:
                reloader(config)
            except Exception:
                log.failure("reload: {reloader} failed", reloader=reloader)
        log.info("reload: configuration applied")
        return config


# Settings a running proxy keeps until it restarts, by the name operators know them by.
RESTART_SETTINGS = (
    ("listen", "listen"),
    ("default", "upstream"),
    ("routes", "routes"),
    ("registries", "registries"),
    ("upstream_ca", "upstream_ca"),
    ("timeouts", "timeouts"),
    ("cache", "cache"),
    ("state_dir", "state_dir"),
    ("admin", "admin.listen"),
    ("search", "search.upstream"),
    ("http2", "http2"),
    ("fleet", "fleet"),
    ("workers", "workers"),
)


class RestartNeeded:
    """Says which settings a reload changed that only a restart applies.

    Upstreams and routes stay too: the cache's records of who may read what are
    keyed by registry name, so pointing a name at another registry under a running
    cache could serve one registry's content as another's.
    """

    def __init__(self, running: Config) -> None:
        self.running = running

    def changed(self, config: Config) -> list[str]:
        return [
            name
            for field, name in RESTART_SETTINGS
            if getattr(config, field) != getattr(self.running, field)
        ]

    def apply(self, config: Config) -> None:
        changed = self.changed(config)
        if changed:
            log.warn(
                "reload: changed settings that need a restart keep their running values: "
                "{settings}",
                settings=", ".join(changed),
            )
