"""The sockets of C{--workers}: the supervisor opens each listener once (or takes
systemd's) and refuses what it cannot hand over; a worker reads what it was handed and
stops when the supervisor's lifeline ends."""

from __future__ import annotations

import os
import socket

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.listeners import ListenFailed
from dockerproxy.workers.adoption import (
    ENVIRONMENT,
    Lifeline,
    Ready,
    WorkerSockets,
    from_environment,
)
from dockerproxy.workers.opening import open_listeners


class OpeningTests(SynchronousTestCase):
    def test_tcp_and_ssl_are_listening_sockets_a_child_can_inherit(self) -> None:
        opened = open_listeners(
            MemoryReactorClock(),
            ["tcp:0:interface=127.0.0.1", r"ssl:0:interface=\:\:1:privateKey=k.pem:backlog=5"],
            workers=2,
        )
        for listener in opened:
            self.addCleanup(listener.close)
        plain, tls = opened
        self.assertEqual((plain.family, tls.family), (socket.AF_INET, socket.AF_INET6))
        self.assertTrue(all(os.get_inheritable(fd) for fd in plain.fds))
        # One socket per worker, on one port: the kernel spreads connections over them.
        ports = {sock.getsockname()[1] for sock in plain.owned}
        self.assertEqual((len(plain.fds), len(ports)), (2, 1))
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass  # accepted into a backlog: it listens

    def test_a_port_in_use_or_a_unix_socket_is_one_line(self) -> None:
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with self.assertRaises(ListenFailed) as caught:
            open_listeners(MemoryReactorClock(), [f"tcp:{port}:interface=127.0.0.1"])
        self.assertIn("Address already in use", str(caught.exception))
        with self.assertRaises(ListenFailed) as caught:
            open_listeners(MemoryReactorClock(), ["tcp:0", "unix:/tmp/x.sock"])
        self.assertEqual(
            str(caught.exception),
            "--listen: cannot listen on 'unix:/tmp/x.sock': with workers, only tcp:, tcp6:, "
            "ssl: and systemd: listeners can be shared",
        )


class AdoptionTests(SynchronousTestCase):
    def test_the_environment_round_trips(self) -> None:
        sockets = WorkerSockets(1, 3, 4, {"tcp:5000": (5, 2)}, {"tcp:9100": (6, 10)})
        self.assertEqual(from_environment({ENVIRONMENT: sockets.encode()}), sockets)
        self.assertIsNone(from_environment({}))

    def test_the_worker_stops_when_the_lifeline_ends(self) -> None:
        read, write = os.pipe()
        stops: list[bool] = []
        reactor = MemoryReactorClock()
        lifeline = Lifeline(reactor, read, lambda: stops.append(True))
        lifeline.startService()
        (end,) = reactor.readers
        os.close(write)  # the supervisor is gone
        reason = end.doRead()  # type: ignore[attr-defined]
        self.assertIsInstance(reason, ConnectionDone)
        end.connectionLost(reason)  # type: ignore[attr-defined]
        self.assertEqual(stops, [True])
        lifeline.stopService()

    def test_a_ready_worker_says_so_once(self) -> None:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        Ready(write).startService()
        self.assertEqual(os.read(read, 64), b"ready\n")
        self.assertEqual(os.read(read, 64), b"", "and closes its end")
