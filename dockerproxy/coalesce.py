"""One upstream request for every client waiting on the same uncached blob.

The first client's GET of a blob leads; clients asking for the same blob while
its request is on the way wait for the answer instead of sending requests of
their own. Once the answer is in, they look again: a fill the leader started now
serves them too, or, when the answer was the leader's own (a 401, 403 or 404
depends on its credentials), each asks the upstream with its own credentials.

A failure of the upstream itself (a 502 or 504: refused, unreachable, timed out)
says nothing about credentials, so the waiters get it too, at the same moment.
Before, each waiter made its own request in turn once the leader's failed, and
the sixth of six clients got its 504 after six timeouts.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import contextmanager

from twisted.internet.defer import Deferred

from dockerproxy.errors import RegistryError

# Upstream failures that are the same for every client: they are shared with the waiters.
SHARED_STATUSES = frozenset({502, 504})


class Coalescer:
    """Requests in flight by key, and the clients waiting for each one's answer."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[Deferred[RegistryError | None]]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._waiting

    async def follow(self, key: Hashable) -> None:
        """Wait for the answer to the request in flight for C{key}.

        Raises the leader's upstream failure (a copy: each client's error is its
        own); returns when the caller should look again.
        """
        turn: Deferred[RegistryError | None] = Deferred()
        self._waiting[key].append(turn)
        shared = await turn
        if shared is not None:
            raise RegistryError(shared.status, shared.code, shared.message, shared.detail)

    @contextmanager
    def lead(self, key: Hashable) -> Iterator[None]:
        """Make the request for C{key} within this block; release the waiters when it ends."""
        waiters: list[Deferred[RegistryError | None]] = []
        self._waiting[key] = waiters
        shared: RegistryError | None = None
        try:
            yield
        except RegistryError as e:
            if e.status in SHARED_STATUSES:
                shared = e
            raise
        finally:
            if self._waiting.get(key) is waiters:
                del self._waiting[key]
            for turn in waiters:
                if not turn.called:  # a waiter whose client left was cancelled
                    turn.callback(shared)
