"""Failed logins cost time: a fixed delay on each, and a client address that fails too
often in a minute is locked out for a while.

Per-address memory is bounded: at most C{max_clients} addresses are remembered, the
least recently seen forgotten first. IPv6 clients are counted by their /64 (one host
commonly has the whole network, and could otherwise take a new address per guess).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()

MAX_FAILURES = 10  # failed logins ...
FAILURE_WINDOW = 60.0  # ... within this many seconds ...
LOCKOUT = 300.0  # ... lock the address out for this long
MAX_CLIENTS = 10_000  # addresses remembered, failing or locked out


def client_key(address: str) -> str:
    """The unit counted: the address, or an IPv6 address's /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


class LoginGuard:
    """Counts failed logins per client address; L{failed} waits C{fail_delay} seconds
    on the C{clock} (never blocking the reactor)."""

    def __init__(
        self,
        clock: IReactorTime,
        fail_delay: float = 1.0,
        max_failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        lockout: float = LOCKOUT,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.clock = clock
        self.fail_delay = fail_delay
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked: OrderedDict[str, float] = OrderedDict()  # key -> until

    def locked_for(self, address: str) -> float | None:
        """Seconds the address is still locked out for, or None."""
        key = client_key(address)
        until = self._locked.get(key)
        if until is None:
            return None
        left = until - self.clock.seconds()
        if left <= 0:
            del self._locked[key]
            return None
        return left

    async def failed(self, address: str) -> None:
        """Count a failed login from C{address} (maybe locking it out), then wait the
        delay every failure costs before its answer goes out."""
        self._count(client_key(address))
        if self.fail_delay > 0:
            await task.deferLater(self.clock, self.fail_delay)

    def _count(self, key: str) -> None:
        now = self.clock.seconds()
        times = self._failures.pop(key, None) or deque(maxlen=self.max_failures)
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            self._lock(key, now)
            return
        self._failures[key] = times
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def _lock(self, key: str, now: float) -> None:
        self._locked.pop(key, None)
        self._locked[key] = now + self.lockout
        while len(self._locked) > self.max_clients:
            self._locked.popitem(last=False)  # the lockout that ends soonest
        log.warn(
            "client {client} locked out for {seconds:g} s after {count} failed logins "
            "within {window:g} s",
            client=key,
            seconds=self.lockout,
            count=self.max_failures,
            window=self.window,
        )

    @property
    def remembered(self) -> int:
        """Addresses held in memory (failing or locked out)."""
        return len(self._failures) + len(self._locked)
