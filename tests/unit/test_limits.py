"""Per-client state (L{dockerproxy.limits}): request buckets, quotas per user, reloads,
and a bounded map however many clients come."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.config import build_config
from dockerproxy.config.policy import Quota, Quotas
from dockerproxy.limits import MAX_CLIENTS, Clients, RequestBucket


class RequestBucketTests(SynchronousTestCase):
    def test_a_burst_then_the_rate(self) -> None:
        bucket = RequestBucket(rate=2.0, burst=3, now=0.0)
        self.assertEqual([bucket.take(0.0) for _ in range(3)], [0.0, 0.0, 0.0])
        self.assertEqual(bucket.take(0.0), 0.5)  # one comes back every half second
        self.assertEqual(bucket.take(0.25), 0.25)
        self.assertEqual(bucket.take(0.5), 0.0)
        self.assertEqual(bucket.take(0.5), 0.5)

    def test_an_idle_client_gets_no_more_than_its_burst(self) -> None:
        bucket = RequestBucket(rate=1.0, burst=2, now=0.0)
        self.assertEqual([bucket.take(1000.0) > 0 for _ in range(3)], [False, False, True])


class ClientsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        quotas = Quotas(
            default=Quota(rate_limit=1.0, max_pulls=2),
            users={"ci": Quota(), "alice": Quota(rate_limit=100.0)},
        )
        self.clients = Clients(self.clock, quotas)

    def test_no_state_for_a_client_without_limits(self) -> None:
        self.assertIsNone(self.clients.state("ci", "192.0.2.1"))
        self.assertIsNone(Clients(self.clock).state(None, "192.0.2.1"))
        self.assertEqual(len(self.clients), 0)

    def test_a_user_is_one_client_wherever_it_comes_from(self) -> None:
        state = self.clients.state("alice", "192.0.2.1")
        self.assertIs(self.clients.state("alice", "198.51.100.7"), state)
        assert state is not None and state.requests is not None
        self.assertEqual(state.requests.rate, 100.0)
        self.assertIsNone(state.budget)
        # An address is a client of its own, with the default quota.
        other = self.clients.state(None, "192.0.2.1")
        self.assertIsNot(other, state)
        assert other is not None
        self.assertEqual(other.quota, Quota(rate_limit=1.0, max_pulls=2))

    def test_many_clients_cost_a_bounded_map(self) -> None:
        for n in range(100_000):
            self.clients.state(None, f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
        self.assertEqual(len(self.clients), MAX_CLIENTS)

    def test_busy_clients_are_never_dropped(self) -> None:
        clients = Clients(self.clock, Quotas(Quota(max_pulls=1)), max_clients=10)
        busy = clients.state(None, "192.0.2.1")
        assert busy is not None
        busy.pulls = 1
        for n in range(1000):
            clients.state(None, f"10.0.{n >> 8}.{n & 255}")
        self.assertEqual(len(clients), 10)
        self.assertIs(clients.state(None, "192.0.2.1"), busy)
        # Only when every client is busy does the map hold more: one per response.
        for n in range(10):
            state = clients.state(None, f"10.1.0.{n}")
            assert state is not None
            state.pulls = 1
        self.assertEqual(len(clients), 11)

    def test_reloaded_quotas_apply_to_known_clients_keeping_their_pulls(self) -> None:
        state = self.clients.state(None, "192.0.2.1")
        assert state is not None and state.requests is not None
        state.pulls = 2
        state.requests.take(self.clock.seconds())
        toml = {"limits": {"rate_limit": "5/s", "bandwidth_limit": "1MiB/s", "max_pulls": 4}}
        self.clients.apply(build_config(toml, {}))
        self.assertIs(self.clients.state(None, "192.0.2.1"), state)
        self.assertEqual(state.quota, Quota(5.0, None, 1024 * 1024, 4))
        self.assertEqual((state.requests.rate, state.requests.burst), (5.0, 5))
        self.assertEqual(state.requests.tokens, 0.0)  # what it spent stays spent
        self.assertEqual(state.pulls, 2)
        self.assertIsNotNone(state.budget)
        self.clients.apply(build_config({"limits": {"max_pulls": 4}}, {}))
        self.assertIs(self.clients.state(None, "192.0.2.1"), state)
        self.assertIsNone(state.requests)
        self.assertIsNone(state.budget)
        self.clients.apply(build_config({}, {}))
        self.assertIsNone(self.clients.state(None, "192.0.2.1"))
