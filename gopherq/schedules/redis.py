"""Redis schedule store: keys beside the broker's, under the broker URL's prefix.

Every key carries the hash tag ``{beat}``, so on Redis Cluster they share one
slot and each script touches one node. ``P`` is the prefix (default ``gq``),
``N`` the namespace (the app's name)::

    P:{beat}:N:lease    string  the leader's token; its TTL is the lease (Redis's clock)
    P:{beat}:N:entries  hash    dynamic entry name -> encoded spec
    P:{beat}:N:version  string  counter bumped by every change of entries or pauses
    P:{beat}:N:tick     hash    name -> last claimed tick (Unix seconds)
    P:{beat}:N:pending  hash    name -> tick claimed but not yet confirmed sent
    P:{beat}:N:since    hash    name -> lower bound: ticks at or before it are never sent
    P:{beat}:N:fp       hash    name -> fingerprint of the schedule the cursor follows
    P:{beat}:N:paused   hash    name -> 1 or 0: a pause override

Multi-key steps are Lua scripts below, each opening with its keys and
arguments. Calls that are safe to repeat are retried through a connection
failure (``Connection.call``); a claim is not, and raises instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gopherq.schedules.store import Claim, EntryState, Lease, ScheduleStore
from gopherq.stores.redis import Client, Connection

_ACQUIRE = """
-- KEYS lease; ARGV owner, ttl in milliseconds
-- Takes the lease if free or the owner's own; returns {holder, pttl, TIME seconds, micros}.
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  holder = ARGV[1]
end
local t = redis.call('TIME')
return {holder, redis.call('PTTL', KEYS[1]), t[1], t[2]}
"""

_RELEASE = """
-- KEYS lease; ARGV owner
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""

_CLAIM = """
-- KEYS lease, tick, pending, since, fp
-- ARGV owner, then 6 per claim: name, expected tick ('' none), tick ('' none),
--      pending (1 or 0), since, fingerprint
-- Returns 1 or 0 per claim; all 0 unless owner holds the lease.
local out = {}
local leads = redis.call('GET', KEYS[1]) == ARGV[1]
for i = 2, #ARGV, 6 do
  local name = ARGV[i]
  if leads and (redis.call('HGET', KEYS[2], name) or '') == ARGV[i + 1] then
    local tick = ARGV[i + 2]
    if tick == '' then
      redis.call('HDEL', KEYS[2], name)
    else
      redis.call('HSET', KEYS[2], name, tick)
    end
    if ARGV[i + 3] == '1' then
      redis.call('HSET', KEYS[3], name, tick)
    else
      redis.call('HDEL', KEYS[3], name)
    end
    if tonumber(ARGV[i + 4]) > tonumber(redis.call('HGET', KEYS[4], name) or '0') then
      redis.call('HSET', KEYS[4], name, ARGV[i + 4])
    end
    redis.call('HSET', KEYS[5], name, ARGV[i + 5])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

_CONFIRM = """
-- KEYS pending; ARGV name, tick pairs: forget the pending tick where it is still that tick
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""

_SET_PAUSED = """
-- KEYS paused, since, version; ARGV name, paused (1 or 0)
-- Resuming raises the lower bound to now: ticks missed while paused are skipped.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[2] == '0' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  if now > tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') then
    redis.call('HSET', KEYS[2], ARGV[1], string.format('%.6f', now))
  end
end
return redis.call('INCR', KEYS[3])
"""

_PUT = """
-- KEYS entries, version; ARGV name, spec
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
"""

_DELETE = """
-- KEYS entries, version, tick, pending, since, fp, paused; ARGV name
-- Deletes the entry and its cursor; returns 1 if the entry existed.
local found = redis.call('HDEL', KEYS[1], ARGV[1])
for i = 3, #KEYS do
  redis.call('HDEL', KEYS[i], ARGV[1])
end
redis.call('INCR', KEYS[2])
return found
"""


class RedisScheduleStore(ScheduleStore):
    """A schedule store in the broker's Redis. See the module docstring."""

    local_clock = False

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self._conn = Connection(url)
        base = f"{self._conn.config.prefix}:{{beat}}:{namespace}:"
        self._lease, self._entries, self._version = (
            base + "lease",
            base + "entries",
            base + "version",
        )
        self._tick, self._pending, self._since = base + "tick", base + "pending", base + "since"
        self._fp, self._paused = base + "fp", base + "paused"

    def acquire(self, owner: str, ttl: float) -> Lease:
        """Take the lease if free, expired or ``owner``'s; return who holds it."""
        millis = max(1, round(ttl * 1000))
        holder, pttl, seconds, micros = self._eval(_ACQUIRE, [self._lease], [owner, millis])
        now = int(seconds) + int(micros) / 1e6
        return Lease(holder.decode(), now + max(int(pttl), 0) / 1000, now)

    def release(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        self._eval(_RELEASE, [self._lease], [owner])

    def states(self) -> dict[str, EntryState]:
        """Every cursor, by name."""
        keys = (self._tick, self._pending, self._since, self._fp, self._paused)

        def read(client: Client) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return pipe.execute()

        ticks, pending, since, fps, paused = (
            {k.decode(): v.decode() for k, v in answer.items()} for answer in self._conn.call(read)
        )
        return {
            name: EntryState(
                tick=int(ticks[name]) if name in ticks else None,
                pending=name in pending and pending[name] == ticks.get(name),
                since=float(since.get(name, 0.0)),
                fingerprint=fps.get(name, ""),
                paused=None if name not in paused else paused[name] == "1",
            )
            for name in ticks.keys() | pending.keys() | since.keys() | fps.keys() | paused.keys()
        }

    def claim(self, owner: str, claims: Sequence[Claim]) -> list[bool]:
        """Apply the claims whose tick is still as expected, while ``owner`` leads.

        Not retried on a connection failure (a claim applied whose answer was lost
        would read as refused): it raises ``BrokerUnavailable``.
        """
        if not claims:
            return []
        args: list[Any] = [owner]
        for c in claims:
            args += (c.name, _text(c.expected), _text(c.tick), int(c.pending))
            args += (repr(float(c.since)), c.fingerprint)
        keys = [self._lease, self._tick, self._pending, self._since, self._fp]
        return [bool(x) for x in self._eval(_CLAIM, keys, args, retry=False)]

    def confirm(self, done: Sequence[tuple[str, int]]) -> None:
        """Clear ``pending`` where the cursor is still at the tick."""
        if done:
            args = [part for name, tick in done for part in (name, str(tick))]
            self._eval(_CONFIRM, [self._pending], args)

    def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume; resuming skips the ticks missed meanwhile."""
        self._eval(_SET_PAUSED, [self._paused, self._since, self._version], [name, int(paused)])

    def entries(self) -> tuple[int, dict[str, bytes]]:
        """The version and the dynamic entries (version first; see the SQLite store)."""

        def read(client: Client) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.get(self._version)
            pipe.hgetall(self._entries)
            return pipe.execute()

        version, entries = self._conn.call(read)
        return int(version or 0), {k.decode(): v for k, v in entries.items()}

    def version(self) -> int:
        """Bumped by every put, delete and pause change."""
        return int(self._conn.call(lambda c: c.get(self._version)) or 0)

    def put(self, name: str, spec: bytes) -> None:
        """Add or replace a dynamic entry."""
        self._eval(_PUT, [self._entries, self._version], [name, spec])

    def delete(self, name: str) -> bool:
        """Delete a dynamic entry and its cursor."""
        keys = [self._entries, self._version, self._tick, self._pending, self._since]
        keys += [self._fp, self._paused]
        return bool(self._eval(_DELETE, keys, [name]))

    def close(self) -> None:
        """Close this process's connections."""
        self._conn.close()

    def _eval(self, source: str, keys: list[str], args: list[Any], *, retry: bool = True) -> Any:
        return self._conn.eval_inline(source, keys, args, retry=retry)


def _text(tick: int | None) -> str:
    return "" if tick is None else str(tick)
