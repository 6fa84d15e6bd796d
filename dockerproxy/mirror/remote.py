"""The upstream side of the mirror: the client's request made upstream, answers relayed.

Every answer the upstream gives a client also tells the access records (see
L{dockerproxy.access}) what that client may read: a 200 that it may read the
repository (and the content in it), a 401 or 403 that it may not.
"""

from __future__ import annotations

from twisted.web.iweb import IResponse

from dockerproxy.access import AccessCache
from dockerproxy.digests import Digest
from dockerproxy.exchange import Proxy, fetch_for_client, relay_response
from dockerproxy.pull import Pull
from dockerproxy.relay import discard
from dockerproxy.upstream import Fetched

# The client's conditions and range, left out when the proxy wants the whole answer.
CONDITIONS = (b"range", b"if-range", b"if-none-match", b"if-modified-since")


class Remote:
    """One upstream exchange (C{exchange}), and the access records it teaches."""

    def __init__(self, exchange: Proxy, access: AccessCache) -> None:
        self.exchange = exchange
        self.access = access

    async def fetch(
        self, pull: Pull, method: bytes | None = None, drop: tuple[bytes, ...] = ()
    ) -> Fetched:
        """The client's request upstream (C{method} instead of its own, C{drop} headers)."""
        return await fetch_for_client(
            self.exchange, pull.request, pull.upstream, pull.url, method=method, drop=drop
        )

    async def relay(self, pull: Pull, fetched: Fetched) -> None:
        await relay_response(
            self.exchange, pull.request, pull.upstream, fetched, pull.scope, pull.ns
        )

    async def relay_fresh(self, pull: Pull) -> None:
        """The client's request made upstream and relayed as it is: nothing cached."""
        await self.relay(pull, await self.fetch(pull))

    def idle_timeout(self, pull: Pull) -> float:
        """How long the upstream's body may stall (its configured idle timeout)."""
        return self.exchange.client(pull.upstream).timeouts.idle

    async def read_small(self, pull: Pull, response: IResponse, limit: int) -> bytes:
        return await self.exchange.client(pull.upstream).read_small(response, pull.url, limit)

    def served(self, pull: Pull, digest: Digest | None = None) -> None:
        """The upstream served the client its repository (and C{digest} in it)."""
        self.access.note_served(
            pull.authorization, pull.repo, None if digest is None else str(digest)
        )

    def answered(self, pull: Pull, code: int) -> None:
        """The upstream answered the client C{code}: a 401 or 403 revokes what it knew."""
        if code in (401, 403):
            self.access.note_refused(pull.authorization, pull.repo)

    async def may_read(self, pull: Pull, digest: Digest | None = None) -> bool:
        """Whether the client may be served its cached repository (and C{digest} in it)
        without asking the upstream, by the newest records, other processes' included."""
        await self.access.refresh(pull.repo)
        if digest is not None and not self.access.is_linked(pull.repo, str(digest)):
            return False
        return self.access.may_read(pull.authorization, pull.repo)

    async def readable(self, pull: Pull, digest: Digest) -> bool:
        """Whether the client may get cached blob C{digest}; if not, the refusal was sent.

        Cached but not yet known to be readable here: a HEAD asks the upstream.
        """
        if await self.may_read(pull, digest):
            return True
        check = await self.fetch(pull, method=b"HEAD", drop=CONDITIONS)
        if check.response.code == 200:
            await discard(check.response)
            self.served(pull, digest)
            return True
        self.answered(pull, check.response.code)
        await self.relay(pull, check)
        return False
