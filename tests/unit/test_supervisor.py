"""The supervisor of C{--workers N}: it starts N workers with the sockets it opened,
restarts a dead one after a growing delay, passes SIGHUP on once the configuration
checks, and on stop has every worker drain and waits for all of them."""

from __future__ import annotations

import os
import shutil
import signal
import socket

from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.config import Config, ConfigError, build_config
from dockerproxy.workers.adoption import ENVIRONMENT, WorkerSockets
from dockerproxy.workers.opening import OpenedListener
from dockerproxy.workers.supervisor import (
    FIRST_DELAY,
    KILL_GRACE,
    LIFELINE_FD,
    MAX_DELAY,
    METRICS_VARIABLE,
    READY_FD,
    STABLE,
    Backoff,
    Supervisor,
)
from tests.unit.fakeprocesses import FakeProcess, FakeSignals, ProcessReactor
from tests.unit.fakes import lines_logged, scratch_dir

ARGV = ["--workers", "2", "--listen", "tcp:5000"]


class SupervisorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.signals = FakeSignals()
        self.loads: list[Config | Exception] = []
        self.cache = scratch_dir(self) / "cache"
        leftover = self.cache / "tmp" / "fill-killed.partial"
        leftover.parent.mkdir(parents=True)
        leftover.write_bytes(b"half a blob")
        config = build_config(
            {
                "workers": 2,
                "drain_timeout": 5,
                "cache": {"dir": str(self.cache)},
                "admin": {"listen": ["tcp:9100:interface=127.0.0.1"]},
            },
            {},
        )
        environ = {"PATH": "/bin", "LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
        self.supervisor = Supervisor(
            config,
            self.reactor,
            ARGV,
            self.load,
            install=self.signals,
            environ=environ,
            executable="/usr/bin/python3",
        )
        self.supervisor._opened = True  # the sockets are given below, not opened
        self.supervisor.listeners = [
            OpenedListener("tcp:5000", [17, 27], socket.AF_INET),
            OpenedListener("ssl:5443:privateKey=k.pem", [18], socket.AF_INET6),  # systemd's
        ]
        self.supervisor.admin = [OpenedListener("tcp:9100:interface=127.0.0.1", [19], 2)]
        self.logged = lines_logged(self)
        self.supervisor.startService()
        assert self.supervisor.metrics_dir is not None
        self.addCleanup(shutil.rmtree, self.supervisor.metrics_dir, True)

    def load(self) -> Config:
        loaded = self.loads.pop(0)
        if isinstance(loaded, Exception):
            raise loaded
        return loaded

    def handed(self, process: FakeProcess) -> WorkerSockets:
        return WorkerSockets.decode(process.env[ENVIRONMENT])

    def test_workers_get_the_sockets_and_the_same_options(self) -> None:
        first, second = self.reactor.processes
        self.assertEqual(first.args, ["/usr/bin/python3", "-m", "dockerproxy.workers", *ARGV])
        self.assertEqual(self.handed(first).listen["tcp:5000"], (5, socket.AF_INET))
        self.assertEqual(
            self.handed(first).listen["ssl:5443:privateKey=k.pem"], (6, socket.AF_INET6)
        )
        self.assertEqual(
            first.fds, {0: 0, 1: 1, 2: 2, LIFELINE_FD: "w", READY_FD: "r", 5: 17, 6: 18, 7: 19}
        )
        self.assertEqual(self.handed(first).admin, {"tcp:9100:interface=127.0.0.1": (7, 2)})
        self.assertEqual([self.handed(p).index for p in (first, second)], [0, 1])
        # The admin listener is worker 0's alone.
        self.assertEqual(self.handed(second).admin, {})
        self.assertEqual(second.fds, {0: 0, 1: 1, 2: 2, 3: "w", 4: "r", 5: 27, 6: 18})
        # systemd's variables name the supervisor's sockets, not the worker's.
        self.assertEqual({k for k in first.env if k.startswith("LISTEN")}, set())
        self.assertEqual(first.env["PATH"], "/bin")

    def test_the_cache_leftovers_go_before_any_worker_starts(self) -> None:
        """Not in a worker: a restarted one would delete the other workers' fills."""
        self.assertEqual(list((self.cache / "tmp").iterdir()), [])
        self.assertTrue((self.cache / "blobs").is_dir())

    def test_a_dead_worker_is_restarted_after_a_growing_delay(self) -> None:
        first, second = self.reactor.processes
        second.exit(signal_number=signal.SIGKILL)
        self.assertEqual(len(self.reactor.processes), 2, "not at once")
        self.reactor.advance(FIRST_DELAY)
        restarted = self.reactor.processes[2]
        self.assertEqual(self.handed(restarted).index, 1)
        self.assertIn(
            "worker 1 (pid 1001) died (signal 9) after 0.0 s: restarting it in 0.5 s", self.logged
        )
        # It dies again at once: the delay doubles, and the other worker is left alone.
        restarted.exit(3)
        self.reactor.advance(FIRST_DELAY)
        self.assertEqual(len(self.reactor.processes), 3)
        self.reactor.advance(FIRST_DELAY)
        self.assertEqual(len(self.reactor.processes), 4)
        self.assertEqual(first.signals, [])

    def test_a_crash_loop_waits_at_most_the_longest_delay(self) -> None:
        backoff = Backoff()
        delays = [backoff.after(0.1) for _ in range(10)]
        self.assertEqual(delays[:3], [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY])
        self.assertEqual(delays[-1], MAX_DELAY)
        self.assertEqual(backoff.after(STABLE), FIRST_DELAY, "a worker that lived starts over")

    def test_sighup_reloads_every_worker_once_the_configuration_checks(self) -> None:
        for process in self.reactor.processes:
            process.say(READY_FD, b"ready\n")
        self.loads = [ConfigError("limits.max_connections", "must be a number"), Config()]
        self.signals.send(signal.SIGHUP)
        self.assertEqual(self.reactor.processes[0].signals, [], "only through the reactor")
        self.reactor.run_queued()
        self.assertEqual([p.signals for p in self.reactor.processes], [[], []])
        self.assertTrue(any("reload refused" in line for line in self.logged))
        self.signals.send(signal.SIGHUP)
        self.reactor.run_queued()
        self.assertEqual([p.signals for p in self.reactor.processes], [["HUP"], ["HUP"]])

    def test_a_worker_still_starting_reloads_once_it_is_ready(self) -> None:
        """SIGHUP kills a process that has no handler for it yet."""
        first, second = self.reactor.processes
        first.say(READY_FD, b"ready\n")
        self.loads = [Config()]
        self.signals.send(signal.SIGHUP)
        self.reactor.run_queued()
        self.assertEqual([first.signals, second.signals], [["HUP"], []])
        second.say(READY_FD, b"ready\n")
        self.assertEqual([first.signals, second.signals], [["HUP"], ["HUP"]])

    def test_every_worker_counts_into_one_directory_for_the_admin_listener(self) -> None:
        metrics = self.supervisor.metrics_dir
        assert metrics is not None
        self.assertEqual(
            [p.env[METRICS_VARIABLE] for p in self.reactor.processes], [metrics, metrics]
        )
        stopped = self.supervisor.stopService()
        for process in self.reactor.processes:
            process.exit()
        self.successResultOf(stopped)
        self.assertFalse(os.path.exists(metrics), "removed once every worker has exited")

    def test_stop_drains_every_worker_and_waits_for_all(self) -> None:
        first, second = self.reactor.processes
        stopped = self.supervisor.stopService()
        self.assertEqual([first.signals, second.signals], [["TERM"], ["TERM"]])
        self.assertEqual(self.signals.handlers[signal.SIGHUP], signal.SIG_DFL)
        first.exit()
        self.assertNoResult(stopped)
        second.exit()
        self.successResultOf(stopped)
        self.reactor.advance(MAX_DELAY)
        self.assertEqual(len(self.reactor.processes), 2, "a stopping worker is not restarted")

    def test_a_worker_still_running_past_the_drain_is_killed(self) -> None:
        first, second = self.reactor.processes
        first.exit(signal_number=signal.SIGKILL)  # a restart is pending
        stopped = self.supervisor.stopService()
        self.reactor.advance(5 + KILL_GRACE)
        self.assertEqual(second.signals, ["TERM", "KILL"])
        second.exit(signal_number=signal.SIGKILL)
        self.successResultOf(stopped)
        self.assertEqual(len(self.reactor.processes), 2, "the pending restart was cancelled")
