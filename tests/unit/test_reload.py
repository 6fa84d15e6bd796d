"""SIGHUP reloads: the handler only asks the reactor to reload; a valid configuration
goes to every reloader in turn, an invalid one to none (one line naming the key); the
settings only a restart applies are named; a real SIGHUP reloads and kills nothing."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.config import Config, ConfigError, build_config
from dockerproxy.reload import Reloads, RestartNeeded
from dockerproxy.tap import Options
from tests.unit.fakes import InlineThreadsReactor, lines_logged, scratch_dir


class QueueingReactor(MemoryReactorClock):
    """Keeps what is called from "another thread" (a signal handler) for the test to run."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[Callable[[], object]] = []

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        self.queued.append(lambda: f(*args, **kw))

    def run_queued(self) -> None:
        queued, self.queued = self.queued, []
        for call in queued:
            call()


class FakeSignals:
    """signal.signal: installs handlers in a dict, returns the one replaced."""

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {signal.SIGHUP: signal.SIG_DFL}

    def __call__(self, signum: int, handler: Any) -> Any:
        previous, self.handlers[signum] = self.handlers.get(signum), handler
        return previous


class ReloadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = QueueingReactor()
        self.signals = FakeSignals()
        self.configs = [build_config({"log_format": "json"}, {})]
        self.reloads = Reloads(self.reactor, self.load, install=self.signals)
        self.applied: list[tuple[str, Config]] = []
        self.logged = lines_logged(self)

    def load(self) -> Config:
        config = self.configs.pop(0)
        if isinstance(config, Exception):
            raise config
        return config

    def reloader(self, name: str) -> Callable[[Config], None]:
        return lambda config: self.applied.append((name, config))

    def test_sighup_is_handled_while_the_service_runs(self) -> None:
        self.reloads.startService()
        handler = self.signals.handlers[signal.SIGHUP]
        self.assertTrue(callable(handler))
        self.reloads.stopService()
        self.assertEqual(self.signals.handlers[signal.SIGHUP], signal.SIG_DFL)

    def test_the_handler_only_asks_the_reactor_to_reload(self) -> None:
        self.reloads.register(self.reloader("site"))
        self.reloads.startService()
        self.signals.handlers[signal.SIGHUP](signal.SIGHUP, None)
        self.assertEqual(self.applied, [], "nothing runs inside the signal handler")
        self.reactor.run_queued()
        self.assertEqual([name for name, _ in self.applied], ["site"])

    def test_a_valid_configuration_goes_to_every_reloader_in_turn(self) -> None:
        for name in ("site", "listeners", "log"):
            self.reloads.register(self.reloader(name))
        config = self.configs[0]
        self.assertIs(self.reloads.reload(), config)
        self.assertEqual(self.applied, [("site", config), ("listeners", config), ("log", config)])
        self.assertEqual(self.logged, ["reload: configuration applied"])

    def test_an_invalid_configuration_is_refused_in_one_line_and_applied_nowhere(self) -> None:
        self.reloads.register(self.reloader("site"))
        self.configs = [ConfigError("limits.max_connections", "must be a whole number")]
        self.assertIsNone(self.reloads.reload())
        self.assertEqual(self.applied, [])
        self.assertEqual(
            self.logged,
            [
                "reload refused, the running configuration stays: "
                "limits.max_connections: must be a whole number"
            ],
        )

    def test_a_failing_reloader_does_not_keep_the_others_from_theirs(self) -> None:
        def broken(config: Config) -> None:
            raise RuntimeError("boom")

        self.reloads.register(broken)
        self.reloads.register(self.reloader("site"))
        self.reloads.reload()
        self.assertEqual([name for name, _ in self.applied], ["site"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class RestartNeededTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.running = build_config({"upstream": "http://127.0.0.1:9", "presets": False}, {})
        self.logged = lines_logged(self)

    def test_reloadable_settings_need_no_restart(self) -> None:
        config = build_config(
            {
                "upstream": "http://127.0.0.1:9",
                "presets": False,
                "log_format": "json",
                "public_url": "https://mirror.test",
                "drain_timeout": 5,
                "limits": {"client_header_timeout": 3, "max_connections": 7},
                "access": {"trusted_proxies": ["10.0.0.0/8"], "deny": ["**"]},
            },
            {},
        )
        RestartNeeded(self.running).apply(config)
        self.assertEqual(self.logged, [])

    def test_the_changed_settings_a_restart_applies_are_named_in_one_line(self) -> None:
        config = build_config(
            {
                "listen": ["tcp:6000"],
                "upstream": "http://127.0.0.1:10",
                "presets": False,
                "routes": {"docker.mirror.test": "http://127.0.0.1:11"},
                "timeouts": {"connect": 3},
                "cache": {"enabled": False},
            },
            {},
        )
        RestartNeeded(self.running).apply(config)
        self.assertEqual(
            self.logged,
            [
                "reload: changed settings that need a restart keep their running values: "
                "listen, upstream, routes, timeouts, cache"
            ],
        )


class ReloadedOptionsTests(SynchronousTestCase):
    def test_the_file_is_read_again_and_the_command_line_still_wins(self) -> None:
        path = scratch_dir(self) / "config.toml"
        path.write_text('log_format = "json"\n[limits]\nclient_idle_timeout = 5\n')
        options = Options()
        options.parseOptions(["--config", str(path), "--client-idle-timeout", "7", "--no-cache"])
        self.assertEqual(options.config.log_format, "json")
        path.write_text('log_format = "text"\n[limits]\nclient_idle_timeout = 9\n')
        config = options.reload_config()
        self.assertEqual(config.log_format, "text", "from the file, read again")
        self.assertEqual(config.limits.client_idle_timeout, 7.0, "the option still wins")
        self.assertIsNone(config.cache.directory, "--no-cache still holds")

    def test_a_broken_file_is_a_config_error(self) -> None:
        path = scratch_dir(self) / "config.toml"
        path.write_text('log_format = "json"\n')
        options = Options()
        options.parseOptions(["--config", str(path), "--no-cache"])
        path.write_text("log_format = [\n")
        with self.assertRaises(ConfigError) as caught:
            options.reload_config()
        self.assertTrue(str(caught.exception).startswith("--config: "), str(caught.exception))


class RealSignalTests(SynchronousTestCase):
    def test_a_sighup_to_this_process_reloads_and_kills_nothing(self) -> None:
        """Without the handler, SIGHUP's default action ends the process (and this test)."""
        config = build_config({}, {})
        applied: list[Config] = []
        reloads = Reloads(InlineThreadsReactor(), lambda: config)
        reloads.register(applied.append)
        previous = signal.getsignal(signal.SIGHUP)
        reloads.startService()
        try:
            # Checked first, so that a missing handler fails here rather than ending pytest.
            self.assertNotIn(signal.getsignal(signal.SIGHUP), (signal.SIG_DFL, previous))
            os.kill(os.getpid(), signal.SIGHUP)  # Python runs the handler before going on
        finally:
            reloads.stopService()
        self.assertEqual(applied, [config])
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)
