"""Redis result backend: job records in the broker's Redis (or Redis Cluster).

The default result backend when the broker is Redis: ``redis://...`` names both.
Each record is one msgpack blob (``JobRecord.to_map()``) under
``P:result:{id}``; a finished record carries a time to live of ``expires`` and
Redis deletes it when that passes. Unfinished records do not expire.

``store`` writes a whole batch in one round trip: per record one script
(``result_store.lua``) and one update of the expiry index. ``wait`` is woken by
the completion itself: storing a finished record also pushes a token onto
``P:result:{id}:done`` (a list of one entry that lives as long as the record, at
most ``DONE_TTL``), and a waiter blocks on that list with
``BLMOVE done done RIGHT LEFT``, which hands the token on without consuming it,
so every waiter of one id wakes. The token is the finished record itself when it
is small (``INLINE_MAX``), which saves the waiter a read. In the same write, just
before the BLMOVE, ``result_token.lua`` gives a record that finished longer ago
than ``DONE_TTL`` a new token, so a wait is one round trip whether the task has
finished or not. Storing an unfinished record drops the token. The record and
its list share the hash tag ``{id}``, so this works on Redis Cluster too (there
the two commands go one after the other). Key layout: ``lib.lua`` of the Redis
broker's scripts.

``cleanup`` has nothing to delete (Redis expires records itself); it counts the
records that expired since it last ran, from a sorted set of expiry times,
``P:{_}:result-expiry``, that ``store`` keeps and trims every few minutes.

URL: any Redis broker URL (``redis://``, ``rediss://``, ``unix://``,
``redis+cluster://``); the ``prefix`` query option applies here too.

Options:
    expires (float): seconds a finished record is kept after it is stored.
        Default one day.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from gopherq.brokers.redis.connection import Call, Client, Connection, script
from gopherq.errors import DecodeError
from gopherq.results.base import JobRecord, ResultBackend

DONE_TTL = 60.0
"""Longest life of a completion token: it is only needed by waiters already blocked."""
INLINE_MAX = 4096
"""Largest record (encoded bytes) that travels in its completion token."""
CLEANUP_EVERY = 300.0
"""How often ``store`` trims the expiry index, per process."""


class RedisResultBackend(ResultBackend):
    """Job records in Redis, by id. See the module docstring."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, expires: float = 86400.0) -> None:
        self.url = url
        self.expires = expires
        self._conn = Connection(url)
        self.prefix = self._conn.config.prefix
        self._expiry_key = f"{self.prefix}:{{_}}:result-expiry"
        self._next_trim = time.time() + CLEANUP_EVERY

    def store(self, records: Sequence[JobRecord]) -> None:
        """Insert or replace records in one round trip; a finished one starts its time to
        live and wakes its waiters."""
        if not records:
            return
        now = time.time()
        ttl_ms = max(int(self.expires * 1000), 1)
        done_ms = min(ttl_ms, int(DONE_TTL * 1000))
        store = script("result_store")
        calls: list[Call] = []
        for record in records:
            blob = msgpack.packb(record.to_map(), use_bin_type=True)
            if record.state.finished:
                inline = 1 if len(blob) <= INLINE_MAX else 0
                calls.append((store, [self._key(record.id)], (blob, ttl_ms, done_ms, inline)))
                calls.append(("ZADD", [self._expiry_key], (now + self.expires, record.id)))
            else:  # no time to live: unfinished records stay
                calls.append((store, [self._key(record.id)], (blob, "", done_ms, 0)))
                calls.append(("ZREM", [self._expiry_key], (record.id,)))
        trim = now >= self._next_trim
        if trim:
            calls.append(("ZREMRANGEBYSCORE", [self._expiry_key], ("-inf", now)))
        self._conn.call(lambda c: self._conn.run_many(c, calls))
        if trim:
            self._next_trim = now + CLEANUP_EVERY

    def get(self, id: str) -> JobRecord | None:
        """The record of ``id``, or None if unknown or expired."""
        blob: Any = self._conn.call(lambda c: self._conn.run(c, "GET", [self._key(id)], ()))
        return None if blob is None else _decode(blob)

    def wait(self, id: str, timeout: float | None) -> JobRecord | None:
        """Block until ``id`` is finished or ``timeout`` passes; the record as it then is."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        key = self._key(id)
        token_call: Call = (script("result_token"), [key], (INLINE_MAX, int(DONE_TTL * 1000)))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.get(id)
            block = repr(max(min(remaining, self._conn.max_block), 0.001))
            blmove: Call = ("BLMOVE", [key + ":done"] * 2, ("RIGHT", "LEFT", block))
            calls = [token_call, blmove]
            token = self._conn.call(functools.partial(self._block, calls=calls), retry=False)
            if token is None:
                continue
            record = _decode(token) if token else self.get(id)  # an empty token: a large record
            if record is not None and record.id == id and record.state.finished:
                return record
            # A token without a finished record (deleted or replaced just now): no spin.
            time.sleep(min(remaining, 0.005))

    def _block(self, client: Client, calls: list[Call]) -> Any:
        return self._conn.run_blocking(client, calls)[1]

    def delete(self, id: str) -> bool:
        """Forget a record; True if it existed (expired ones count as gone)."""
        key = self._key(id)

        def send(client: Client) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.delete(key)  # one key per DEL: cluster pipelines refuse several
            pipe.delete(key + ":done")
            pipe.zrem(self._expiry_key, id)
            return pipe.execute()

        return bool(self._conn.call(send)[0])

    def cleanup(self) -> int:
        """Count records that expired since the last cleanup (Redis deleted them itself)."""
        return int(
            self._conn.call(lambda c: c.zremrangebyscore(self._expiry_key, "-inf", time.time()))
        )

    def close(self) -> None:
        """Close this process's connections; the next call reconnects."""
        self._conn.close()

    def _key(self, id: str) -> str:
        return f"{self.prefix}:result:{{{id}}}"


def _decode(blob: bytes) -> JobRecord:
    try:
        data = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"unreadable job record: {exc}") from exc
    return JobRecord.from_map(data)
