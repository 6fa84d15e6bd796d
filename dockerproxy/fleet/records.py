"""The access records every instance of the fleet shares, in Redis.

Each repository's record (see L{dockerproxy.accessrecords}) is a Redis hash
C{access:<sha256 of the repository>} with its C{public} and C{refused} times, and a
set C{links:<sha256>} of the content seen in it. A change is applied by one Lua
script, atomically, as L{dockerproxy.accessrecords.merged} would apply it: each
time only moves forward (the later of C{public} and C{refused} wins), links are a
union less those a writer saw leave, and a record with neither a public time nor
links is deleted (a lone refusal revokes nothing, and would let anyone fill
Redis with made-up names). No read-modify-write from Python, so no instance can
undo another's news. Keys expire after C{ttl} (a public record's life); a set
holds at most L{MAX_LINKS} links. No credential is ever written here: grants stay
in each instance's memory.

The instance's own records stay on its disk too (C{local}): they are what decides
while Redis is away, and what survives a restart without it.

The records are read before every answer from cache, so a read is shared: the
requests for one repository that arrive while its record is being read wait for
that read, and a record read is used for L{FRESH} seconds (or until this instance
writes that repository's record), for at most L{MAX_REMEMBERED} repositories. A
refusal another instance hears thus reaches this one within about two seconds
(its write a second after it changes, then at most L{FRESH}); bench/fleet_hits.py
measures what the reads cost a hit.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from dockerproxy.fleet.client import FleetClient

# Links one repository's set holds at most (an image of 100 layers, 1,000 tags of it).
MAX_LINKS = 100_000
# Seconds a record read from Redis is used before it is read again.
FRESH = 1.0
# Records remembered at most (the least recently read go first).
MAX_REMEMBERED = 10_000

MERGE = """
local public, refused = tonumber(ARGV[2]), tonumber(ARGV[3])
for _, digest in ipairs(cjson.decode(ARGV[7])) do redis.call('srem', KEYS[2], digest) end
for _, digest in ipairs(cjson.decode(ARGV[6])) do
    if redis.call('scard', KEYS[2]) >= tonumber(ARGV[5]) then break end
    redis.call('sadd', KEYS[2], digest)
end
local function later(field, value, text)
    if value == nil then return end
    local old = tonumber(redis.call('hget', KEYS[1], field))
    if old == nil or value > old then redis.call('hset', KEYS[1], field, text) end
end
later('public', public, ARGV[2])
local kept = redis.call('hexists', KEYS[1], 'public') == 1 or redis.call('scard', KEYS[2]) > 0
if not kept then
    redis.call('del', KEYS[1], KEYS[2])
    return 0
end
later('refused', refused, ARGV[3])
redis.call('hset', KEYS[1], 'repository', ARGV[1])
redis.call('expire', KEYS[1], ARGV[4])
redis.call('expire', KEYS[2], ARGV[4])
return 1
"""


class FleetUnavailable(Exception):
    """Redis could not be asked: what this instance knows stands."""


class FleetRecords:
    """A shared L{dockerproxy.access.RecordStore} over Redis (C{client}), kept beside the
    instance's C{local} store (a L{dockerproxy.accessrecords.MetaRecords})."""

    shared = True

    def __init__(self, client: FleetClient, local: Any, ttl: float) -> None:
        self.client = client
        self.local = local
        self.ttl = max(1, int(ttl))
        # Repository -> (when read, the record), least recently read first.
        self._read: OrderedDict[str, tuple[float, dict[str, Any] | None]] = OrderedDict()
        # Repository -> the requests waiting for the read under way.
        self._reading: dict[str, list[Deferred[dict[str, Any] | None]]] = {}
        # Reads under way that started before this instance wrote the record: not kept.
        self._outdated: set[str] = set()

    def load(self) -> Iterable[dict[str, Any]]:
        return self.local.load()

    def save(self, repository: str, change: dict[str, Any]) -> None:
        self.local.save(repository, change)
        self._read.pop(repository, None)  # what was read is older than this
        if repository in self._reading:
            self._outdated.add(repository)
        record, links = self._keys(repository)
        args = [
            repository,
            _number(change.get("public")),
            _number(change.get("refused")),
            str(self.ttl),
            str(MAX_LINKS),
            json.dumps(list(change.get("links") or ())),
            json.dumps(list(change.get("forgotten") or ())),
        ]
        Deferred.fromCoroutine(
            self.client.call("records", lambda r: r.eval(MERGE, 2, record, links, *args))
        )

    def fetch(self, repository: str) -> Deferred[dict[str, Any] | None]:
        """The fleet's record of C{repository}; fails with L{FleetUnavailable} when Redis
        cannot say, so the instance's own records decide."""
        read = self._read.get(repository)
        if read is not None and self.client.clock.seconds() - read[0] < FRESH:
            self._read.move_to_end(repository)
            return succeed(read[1])
        waiting: Deferred[dict[str, Any] | None] = Deferred()
        if repository in self._reading:
            self._reading[repository].append(waiting)
            return waiting
        self._reading[repository] = [waiting]
        when = self.client.clock.seconds()
        Deferred.fromCoroutine(self._fetch(repository)).addBoth(self._done, repository, when)
        return waiting

    def _done(self, outcome: Any, repository: str, when: float) -> None:
        """Hand the read's outcome to every request waiting for it; keep a record read
        (never a failure: the next request asks again)."""
        failed = isinstance(outcome, Failure)
        if not failed and repository not in self._outdated:
            self._read[repository] = (when, outcome)
            self._read.move_to_end(repository)
            while len(self._read) > MAX_REMEMBERED:
                self._read.popitem(last=False)
        self._outdated.discard(repository)
        for waiting in self._reading.pop(repository, []):
            if failed:
                waiting.errback(outcome)
            else:
                waiting.callback(outcome)

    async def _fetch(self, repository: str) -> dict[str, Any] | None:
        record, links = self._keys(repository)
        found = await self.client.call("records", lambda r: (r.hgetall(record), r.smembers(links)))
        if found is None:
            raise FleetUnavailable("Redis did not answer")
        fields, members = found
        if not fields and not members:
            return None
        return {
            "repository": repository,
            "public": _float(fields.get(b"public")),
            "refused": _float(fields.get(b"refused")),
            "links": sorted(m.decode() for m in members),
        }

    def _keys(self, repository: str) -> tuple[str, str]:
        name = hashlib.sha256(repository.encode()).hexdigest()
        return self.client.key("access", name), self.client.key("links", name)


def _number(value: Any) -> str:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return repr(float(value)) if ok else ""


def _float(value: bytes | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
