"""Per-client state for the limits: request rate, bandwidth budget, blob downloads at once.

A client is a key: the authenticated user, else the client's address. Its state is
made when it first needs one (a client with no limit never gets any) and kept in an
LRU map of at most L{MAX_CLIENTS} entries: many distinct clients cost a bounded amount
of memory. An entry in use (downloads under way, a response being shaped) is never
dropped, so the map holds at most L{MAX_CLIENTS} plus the clients being served; an idle
one that is dropped loses nothing but a partly spent bucket.

L{Clients.apply} takes reloaded settings: each client's state follows its new quota
the next time it is used, keeping its downloads under way and what it has spent.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

from dockerproxy.config import Config
from dockerproxy.config.policy import Quota, Quotas
from dockerproxy.shaping import ByteBudget

MAX_CLIENTS = 10_000


class RequestBucket:
    """A token bucket over requests: C{rate} a second, at most C{burst} at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """Admit one request: 0.0 if it may go, else the seconds until one may."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def retune(self, rate: float, burst: int, now: float) -> None:
        self._refill(now)
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, burst)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


class ClientState:
    """One client's buckets and downloads under way, made to its quota."""

    __slots__ = ("budget", "pulls", "quota", "requests")

    def __init__(self, quota: Quota, clock: IReactorTime) -> None:
        self.quota = Quota()
        self.requests: RequestBucket | None = None
        self.budget: ByteBudget | None = None
        self.pulls = 0
        self.follow(quota, clock)

    @property
    def busy(self) -> bool:
        return self.pulls > 0 or (self.budget is not None and self.budget.busy)

    def follow(self, quota: Quota, clock: IReactorTime) -> None:
        """Take C{quota} (new, or reloaded), keeping what was spent under the old one."""
        if quota == self.quota:
            return
        now = clock.seconds()
        if quota.rate_limit is None:
            self.requests = None
        elif self.requests is None:
            self.requests = RequestBucket(quota.rate_limit, quota.burst, now)
        else:
            self.requests.retune(quota.rate_limit, quota.burst, now)
        if quota.bandwidth_limit is None:
            if self.budget is not None:
                self.budget.lift()  # responses under way go on unlimited
            self.budget = None
        elif self.budget is None:
            self.budget = ByteBudget(clock, quota.bandwidth_limit)
        else:
            self.budget.set_rate(quota.bandwidth_limit)
        self.quota = quota


class Clients:
    """The state of every client with a limit, bounded (see the module's docstring)."""

    def __init__(
        self, clock: IReactorTime, quotas: Quotas | None = None, max_clients: int = MAX_CLIENTS
    ) -> None:
        self.clock = clock
        self.quotas = quotas or Quotas()
        self.max_clients = max_clients
        self._states: OrderedDict[tuple[str, str], ClientState] = OrderedDict()

    def apply(self, config: Config) -> None:
        """Reloaded settings: new quotas for requests from now on."""
        self.quotas = config.quotas

    def __len__(self) -> int:
        return len(self._states)

    def state(self, user: str | None, address: str) -> ClientState | None:
        """The state of the client (C{user}, else C{address}); None if it has no limit."""
        quota = self.quotas.for_user(user)
        if quota.unlimited:
            return None
        key = ("user", user) if user is not None else ("address", address)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = ClientState(quota, self.clock)
            self._trim()
        else:
            self._states.move_to_end(key)
            state.follow(quota, self.clock)
        return state

    def _trim(self) -> None:
        """Drop the least recently used idle clients down to the bound; busy ones are
        passed over (moved to the back), at most once each, and so is the newest."""
        for _ in range(len(self._states) - 1):
            if len(self._states) <= self.max_clients:
                return
            key, state = self._states.popitem(last=False)
            if state.busy:
                self._states[key] = state
