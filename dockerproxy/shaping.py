"""Bandwidth shaping: a client's response bodies leave at its C{--bandwidth-limit}.

Each limited client has one L{ByteBudget}, a token bucket of bytes shared by all of its
responses. Every body byte written to one of its requests is spent from it; the
producer of a response whose write finds the bucket in debt (the relay's upstream
socket, a cache sender, a body written whole) is paused, as a full socket would pause
it, and resumed, in turn with the client's other responses, once the bucket has
refilled a little. Nothing is buffered on the proxy's side: to the producers a limited
client looks like a slow one, and costs no more memory than one.

L{ShapedRequest}, the base of the Site's requests, does the accounting: it puts a
L{Gate} between the request and each producer it registers, and sends a body written
whole with no producer (a manifest, a tag list) in slices through a L{BodyQueue}.
Producers that know the client's budget size their reads by it (L{allowance}), and the
zero-copy sender, whose bytes bypass C{write()}, spends them itself (L{charge}).

A leaf: it knows requests and producers, not what a client or a limit is (see
L{dockerproxy.policy}). Without a budget, a request costs one attribute check a write.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.web.http import NO_BODY_CODES
from twisted.web.server import Request
from zope.interface import implementer

from dockerproxy import internals

# A bucket holds this many seconds of its rate (at least MIN_CAPACITY): what an idle
# client may get at once, and, half of it, how much a paused client is owed before its
# producers are resumed, so they run in turns of about a tenth of a second.
BURST_SECONDS = 0.2
MIN_CAPACITY = 64 * 1024
# The least a write is allowed, however little is left: smaller pieces cost more
# Python work than they spread the load.
MIN_SLICE = 16 * 1024
# The allowance of a budget whose limit was lifted.
UNLIMITED = 1 << 40


def capacity_for(rate: float) -> float:
    return max(rate * BURST_SECONDS, MIN_CAPACITY)


class ByteBudget:
    """One client's bytes a second, shared by every response it is being sent.

    Writes spend from it and may take it into debt, by one write each: a response whose
    write finds it in debt has its producer paused (its L{Gate} waits in line), and so
    has one that starts meanwhile. Once half its capacity is back, the waiting gates are
    resumed in the order they began to wait, until one's writes take it into debt
    again: the rest keep their place at the front of the line. Each of a client's
    downloads so gets its turn, and none starves.
    """

    def __init__(self, clock: IReactorTime, rate: float) -> None:
        self.clock = clock
        self.rate = rate
        self.capacity = capacity_for(rate)
        self.tokens = self.capacity
        self._stamp = clock.seconds()
        self._gates: set[Gate] = set()  # the responses under way
        self._waiting: dict[Gate, None] = {}  # those paused for the budget, in line
        self._wake: IDelayedCall | None = None
        self._lifted = False

    @property
    def busy(self) -> bool:
        """Whether a response is being sent under it (it must not be forgotten)."""
        return bool(self._gates)

    @property
    def in_debt(self) -> bool:
        return self._wake is not None

    def set_rate(self, rate: float) -> None:
        """A new limit (the settings were reloaded): it applies from now."""
        self._refill()
        self.rate = rate
        self.capacity = capacity_for(rate)
        self.tokens = min(self.tokens, self.capacity)
        if self._wake is not None:
            self._wake.cancel()
            self._schedule()

    def lift(self) -> None:
        """No limit any more (the settings were reloaded): responses under way go on
        unpaused."""
        self._lifted = True
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        waiting, self._waiting = list(self._waiting), {}
        for gate in waiting:
            gate.unthrottle()

    def allowance(self) -> int:
        """Bytes the next write may take (reads sized by it overshoot little)."""
        if self._lifted:
            return UNLIMITED
        self._refill()
        return max(MIN_SLICE, int(self.tokens))

    def spend(self, count: int, gate: Gate | None = None) -> None:
        """C{count} bytes were sent, by the producer behind C{gate} if any: in debt, it
        waits."""
        if self._lifted:
            return
        self._refill()
        self.tokens -= count
        if self.tokens < 0:
            if self._wake is None:
                self._schedule()
            if gate is not None and gate in self._gates:
                self._wait(gate)

    def join(self, gate: Gate) -> None:
        self._gates.add(gate)
        if self._wake is not None:
            self._wait(gate)

    def leave(self, gate: Gate) -> None:
        self._gates.discard(gate)
        self._waiting.pop(gate, None)

    def _wait(self, gate: Gate) -> None:
        if gate not in self._waiting:
            self._waiting[gate] = None
            gate.throttle()

    def _refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _schedule(self) -> None:
        wait = (self.capacity / 2 - self.tokens) / self.rate
        self._wake = self.clock.callLater(max(wait, 0.0), self._wake_up)

    def _wake_up(self) -> None:
        self._wake = None
        while self._waiting and self._wake is None:
            gate = next(iter(self._waiting))
            del self._waiting[gate]
            gate.unthrottle()  # may write at once, into debt again: then the rest wait


@implementer(IPushProducer)
class Gate:
    """Between a request and its producer: the producer is paused while the client's
    socket is full (the channel says so) or its budget is spent, resumed when neither.

    What the channel says is passed on as it comes while the budget allows, so the
    producer sees exactly the calls it would see unshaped.
    """

    def __init__(self, budget: ByteBudget, producer: IPushProducer, consumer_paused: bool) -> None:
        self.budget = budget
        self.producer = producer
        self._consumer_paused = consumer_paused
        self._throttled = False

    def pauseProducing(self) -> None:
        self._consumer_paused = True
        if not self._throttled:
            self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._consumer_paused = False
        if not self._throttled:
            self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.close()
        self.producer.stopProducing()

    def throttle(self) -> None:
        if not self._throttled:
            self._throttled = True
            if not self._consumer_paused:
                self.producer.pauseProducing()

    def unthrottle(self) -> None:
        if self._throttled:
            self._throttled = False
            if not self._consumer_paused:
                self.producer.resumeProducing()

    def close(self) -> None:
        self.budget.leave(self)


@implementer(IPushProducer)
class BodyQueue:
    """A body written whole with no producer of its own (a manifest, a tag list, a page),
    sent in slices as the client's budget allows. It holds only what the caller had
    already made (those bytes), not a copy."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        allowance: Callable[[], int],
        done: Callable[[], None],
    ) -> None:
        self._write = write
        self._allowance = allowance
        self._done = done
        self._parts: deque[memoryview] = deque()
        self._paused = False
        self._stopped = False
        self._pumping = False

    def add(self, data: bytes) -> None:
        self._parts.append(memoryview(data))
        if not self._paused:
            self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._parts and not self._paused and not self._stopped:
                part = self._parts[0]
                count = min(len(part), self._allowance())
                if count == len(part):
                    self._parts.popleft()
                else:
                    self._parts[0] = part[count:]
                self._write(bytes(part[:count]))
        finally:
            self._pumping = False
        if not self._parts and not self._stopped:
            self._stopped = True
            self._done()

    def stopProducing(self) -> None:
        self._stopped = True
        self._parts.clear()


class ShapedRequest(Request):
    """A request whose body bytes are spent from its client's L{ByteBudget}, if it has one.

    C{budget_for}, when set (by the policy, for a client with a bandwidth limit), finds
    the budget when the body starts, so it is the one of the client as known by then
    (the authenticated user, once authenticated).
    """

    budget_for: Callable[[], ByteBudget | None] | None = None
    budget: ByteBudget | None = None
    _gate: Gate | None = None
    _queue: BodyQueue | None = None
    _finish_pending = False

    def shaping(self) -> ByteBudget | None:
        find = self.budget_for
        if find is not None:
            self.budget_for = None
            self.budget = find()
        return self.budget

    def write(self, data: bytes) -> None:
        if self.budget is None and self.budget_for is None:
            super().write(data)
            return
        budget = self.shaping()
        if budget is None or not data:
            super().write(data)
        elif self._queue is not None:
            self._queue.add(data)  # behind what is already waiting
        elif self.producer is None and self._has_body() and len(data) > budget.allowance():
            self._queue = BodyQueue(self._write_spent, budget.allowance, self._queue_sent)
            self.registerProducer(self._queue, True)
            self._queue.add(data)
        else:
            self._write_spent(data)

    def _write_spent(self, data: bytes) -> None:
        before = self.sentLength
        super().write(data)
        if self.sentLength > before:
            self.spent(self.sentLength - before)

    def spent(self, count: int) -> None:
        """C{count} body bytes went to the client: its producer waits if that was too many."""
        if self.budget is not None:
            self.budget.spend(count, self._gate)

    def _has_body(self) -> bool:
        return self.method != b"HEAD" and self.code not in NO_BODY_CODES

    def _queue_sent(self) -> None:
        self.unregisterProducer()
        self._queue = None
        if self._finish_pending:
            self._finish_pending = False
            self.finish()

    def finish(self) -> None:
        """Finish, once a body being sent in slices is out."""
        if self._queue is not None:
            self._finish_pending = True
            return
        super().finish()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        budget = self.shaping() if streaming else None
        if budget is None:
            super().registerProducer(producer, streaming)
            return
        gate = Gate(budget, producer, internals.channel_waiting(self.channel))
        super().registerProducer(gate, streaming)
        self.producer = producer  # what the producer itself checks against
        self._gate = gate
        budget.join(gate)

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        self._close_gate()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self._close_gate()
        if self._queue is not None:
            self._queue.stopProducing()
            self._queue = None

    def _close_gate(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.close()


def allowance(request: object) -> int | None:
    """Bytes the next write to C{request} may take, or None if its client is not limited."""
    budget: ByteBudget | None = getattr(request, "budget", None)
    return None if budget is None else budget.allowance()


def charge(request: object, count: int) -> None:
    """Spend bytes sent to C{request}'s client past C{write()} (zero-copy sends)."""
    if isinstance(request, ShapedRequest):
        request.spent(count)
