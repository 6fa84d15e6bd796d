"""Bandwidth shaping (L{dockerproxy.shaping}): a client's budget pauses the producers of
its responses (the relay's upstream socket among them, whose C{producerState} shows it)
and its bodies arrive at the limit, measured over a Clock's simulated time."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dockerproxy.relay import READ_BLIND, READ_MIN
from dockerproxy.shaping import MIN_CAPACITY, ByteBudget, capacity_for
from tests.unit.shapers import Recording, Relayed, ShapedClient

KiB = 1024
MiB = 1024 * KiB
STEP = 0.01  # seconds of simulated time between two reads of an upstream socket


def run(clock: Clock, bodies: list[Relayed], seconds: float) -> None:
    """Play the upstream sockets and the clock for C{seconds}: each step, every socket
    not paused delivers one read."""
    for _ in range(round(seconds / STEP)):
        for body in bodies:
            body.feed()
        clock.advance(STEP)


class BudgetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.budget = ByteBudget(self.clock, 1 * MiB)
        self.capacity = capacity_for(1 * MiB)

    def response(self, on_resume: int = 0) -> tuple[ShapedClient, Recording]:
        """A response of the client under way, its producer writing C{on_resume} bytes
        whenever it is resumed."""
        client = ShapedClient(self.clock, self.budget)
        producer = Recording(client.request, on_resume)
        client.request.registerProducer(producer, True)
        return client, producer

    def test_capacity_is_a_fifth_of_a_second_of_rate_at_least_64_kib(self) -> None:
        self.assertEqual(capacity_for(10 * MiB), 2 * MiB)
        self.assertEqual(capacity_for(16 * KiB), MIN_CAPACITY)

    def test_spending_within_the_capacity_pauses_nothing(self) -> None:
        client, producer = self.response()
        client.request.write(b"x" * int(self.capacity))
        self.assertEqual(producer.calls, [])
        self.assertFalse(self.budget.in_debt)

    def test_a_write_into_debt_pauses_its_producer_until_half_the_capacity_is_back(self) -> None:
        client, producer = self.response()
        other, idle = self.response()
        client.request.write(b"x" * (int(self.capacity) + 100_000))
        self.assertEqual((producer.calls, idle.calls), (["pause"], []))
        other.request.write(b"x")  # the other one pauses at its next write
        self.assertEqual(idle.calls, ["pause"])
        wait = (self.capacity / 2 + 100_001) / MiB
        self.clock.advance(wait - 0.001)
        self.assertTrue(producer.paused and idle.paused)
        self.clock.advance(0.002)
        self.assertEqual((producer.calls, idle.calls), (["pause", "resume"], ["pause", "resume"]))
        self.assertFalse(self.budget.in_debt)

    def test_the_allowance_is_what_is_left_but_never_a_crumb(self) -> None:
        self.assertEqual(self.budget.allowance(), int(self.capacity))
        self.budget.spend(int(self.capacity) - 100)
        self.assertEqual(self.budget.allowance(), 16 * KiB)
        self.clock.advance(0.1)
        self.assertEqual(self.budget.allowance(), int(0.1 * MiB) + 100)

    def test_a_response_starting_while_in_debt_starts_paused(self) -> None:
        self.budget.spend(int(self.capacity) + 1)
        _, producer = self.response()
        self.assertEqual(producer.calls, ["pause"])

    def test_producers_take_turns(self) -> None:
        """A resumed producer that writes at once takes the budget into debt again; the
        others keep their place and go first at the next turn."""
        responses = [self.response(on_resume=300 * KiB) for _ in range(3)]
        self.budget.spend(int(self.capacity) + 1)
        for client, _ in responses:
            client.request.write(b"x")  # each finds the budget in debt, and waits in line
        a, b, c = (producer for _, producer in responses)
        self.assertEqual([p.calls for p in (a, b, c)], [["pause"]] * 3)
        turns = ""
        for _ in range(6):
            resumes = [p.calls.count("resume") for p in (a, b, c)]
            self.clock.advance(1)
            for name, p, before in zip("abc", (a, b, c), resumes, strict=True):
                turns += name * (p.calls.count("resume") - before)
            self.assertTrue(a.paused and b.paused and c.paused)
        self.assertEqual(turns, "abcabc")

    def test_the_socket_and_the_budget_pause_together(self) -> None:
        """The producer hears the channel as it would unshaped, unless the budget holds it."""
        client, producer = self.response()
        client.channel.pauseProducing()  # the client's socket is full
        self.assertEqual(producer.calls, ["pause"])
        client.request.spent(int(self.capacity) + 1)  # and the budget spent (sendfile)
        client.channel.resumeProducing()  # the socket drains: the budget still holds it
        self.assertEqual(producer.calls, ["pause"])
        client.channel.pauseProducing()
        self.clock.advance(1)  # the budget is back: the socket still holds it
        self.assertEqual(producer.calls, ["pause"])
        client.channel.resumeProducing()
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_a_lifted_limit_resumes_and_counts_nothing(self) -> None:
        client, producer = self.response()
        client.request.spent(int(self.capacity) + 1)
        self.budget.lift()
        self.assertEqual(producer.calls, ["pause", "resume"])
        client.request.spent(100 * MiB)
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_new_rate_applies_to_the_debt(self) -> None:
        client, producer = self.response()
        client.request.spent(int(self.capacity) + MiB)
        self.budget.set_rate(10 * MiB)
        self.clock.advance(0.2)  # (1 MiB + half of the new capacity) / 10 MiB/s
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_a_finished_response_is_forgotten(self) -> None:
        client, producer = self.response()
        self.assertTrue(self.budget.busy)
        client.request.unregisterProducer()
        self.assertFalse(self.budget.busy)
        client.request.registerProducer(producer, True)
        client.protocol.connectionLost(Failure(ConnectionDone("client closed")))
        self.assertFalse(self.budget.busy)


class RelayTests(SynchronousTestCase):
    """An upstream body relayed to a limited client: the upstream socket is paused, not
    read into memory, and the client receives at the limit."""

    def setUp(self) -> None:
        self.clock = Clock()

    def test_the_upstream_socket_is_paused_while_the_budget_is_spent(self) -> None:
        budget = ByteBudget(self.clock, 1 * MiB)
        body = Relayed(ShapedClient(self.clock, budget), self.clock, 8 * MiB)
        self.assertEqual(body.upstream.bufferSize, int(capacity_for(MiB)))  # sized by the budget
        body.feed()
        self.assertEqual(body.upstream.producerState, "producing")
        body.feed()
        self.assertEqual(body.upstream.producerState, "paused")
        received = body.sent
        run(self.clock, [body], 0.1)
        self.assertEqual(body.sent, received)  # nothing read while paused
        run(self.clock, [body], 0.3)
        self.assertGreater(body.sent, received)

    def test_a_relayed_body_arrives_at_the_limit(self) -> None:
        rate = 2 * MiB
        client = ShapedClient(self.clock, ByteBudget(self.clock, rate))
        body = Relayed(client, self.clock, 64 * MiB)
        run(self.clock, [body], 2)
        at_two = len(client.body())
        run(self.clock, [body], 8)
        at_ten = len(client.body())
        # An idle client may have its capacity at once, then gets the rate.
        self.assertLessEqual(at_ten, capacity_for(rate) + 10 * rate + READ_MIN)
        self.assertLess(abs((at_ten - at_two) / 8 - rate), 0.03 * rate)
        self.assertEqual(body.sent - len(client.body()), 0)  # nothing held in the proxy

    def test_an_unlimited_client_is_not_paused(self) -> None:
        client = ShapedClient(self.clock, None)
        body = Relayed(client, self.clock, 8 * MiB)
        run(self.clock, [body], 0.1)
        self.assertEqual(body.upstream.producerState, "producing")
        self.assertEqual(len(client.body()), 10 * READ_BLIND)

    def test_the_downloads_of_one_client_share_its_budget(self) -> None:
        rate = 1 * MiB
        budget = ByteBudget(self.clock, rate)
        clients = [ShapedClient(self.clock, budget) for _ in range(3)]
        bodies = [Relayed(client, self.clock, 64 * MiB) for client in clients]
        run(self.clock, bodies, 2)
        before = [len(client.body()) for client in clients]
        run(self.clock, bodies, 10)
        gained = [len(client.body()) - b for client, b in zip(clients, before, strict=True)]
        self.assertLess(abs(sum(gained) / 10 - rate), 0.05 * rate)
        for share in gained:  # and none is starved
            self.assertGreater(share, 0.2 * sum(gained))

    def test_a_slow_socket_still_pauses_the_upstream(self) -> None:
        budget = ByteBudget(self.clock, 100 * MiB)
        client = ShapedClient(self.clock, budget, buffer_size=100_000)
        body = Relayed(client, self.clock, 8 * MiB)
        body.feed()
        self.assertEqual(body.upstream.producerState, "paused")  # by the socket
        self.clock.advance(1)
        self.assertEqual(body.upstream.producerState, "paused")  # the budget does not resume it
        client.transport.drain()
        self.assertEqual(body.upstream.producerState, "producing")


class WholeBodyTests(SynchronousTestCase):
    """A body written at once with no producer (a manifest) goes out in slices."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.budget = ByteBudget(self.clock, 256 * KiB)
        self.client = ShapedClient(self.clock, self.budget)
        self.request = self.client.request
        self.data = bytes(range(256)) * 4096  # 1 MiB
        self.finished: list[object] = []
        self.request.notifyFinish().addBoth(self.finished.append)

    def test_a_whole_body_is_sent_at_the_limit_and_finished_after(self) -> None:
        self.request.setHeader(b"content-length", b"%d" % len(self.data))
        self.request.write(self.data)
        self.request.finish()
        self.assertFalse(self.request.finished)
        self.assertLessEqual(len(self.client.body()), capacity_for(256 * KiB) + 16 * KiB)
        for _ in range(1000):
            if self.request.finished:
                break
            self.clock.advance(STEP)
        self.assertEqual(self.client.body(), self.data)
        self.assertEqual(self.finished, [None])
        elapsed = self.clock.seconds()
        expected = (len(self.data) - capacity_for(256 * KiB)) / (256 * KiB)
        self.assertLess(abs(elapsed - expected), 0.25)
        self.assertIsNone(self.request.producer)
        self.assertFalse(self.budget.busy)

    def test_a_small_body_goes_at_once(self) -> None:
        self.request.write(b"{}")
        self.request.finish()
        self.assertTrue(self.request.finished)
        self.assertEqual(self.client.body(), b"2\r\n{}\r\n0\r\n\r\n")

    def test_head_sends_no_body_and_spends_nothing(self) -> None:
        client = ShapedClient(self.clock, self.budget, method=b"HEAD")
        client.request.setHeader(b"content-length", b"%d" % len(self.data))
        client.request.write(self.data)
        client.request.finish()
        self.assertTrue(client.request.finished)
        self.assertEqual(client.body(), b"")
        self.assertEqual(self.budget.allowance(), int(capacity_for(256 * KiB)))

    def test_a_client_gone_mid_body_is_forgotten(self) -> None:
        self.request.setHeader(b"content-length", b"%d" % len(self.data))
        self.request.write(self.data)
        self.request.finish()
        self.client.protocol.connectionLost(Failure(ConnectionDone("client closed")))
        self.assertFalse(self.budget.busy)
        self.clock.advance(10)
        self.assertFalse(self.request.finished)
        self.assertEqual(len(self.finished), 1)
        self.assertIsInstance(self.finished[0], Failure)
