"""Redis result backend: job records in the broker's Redis (or Redis Cluster).

The default result backend when the broker is Redis: ``redis://...`` names both.
Each record is one msgpack blob (``JobRecord.to_map()``) under
``P:result:{id}``; a finished record carries a time to live of ``expires`` and
Redis deletes it when that passes. Unfinished records do not expire.

``store`` writes a whole batch in one round trip: per record one script
(``result_store.lua``), then one update of the expiry index and one script
(``result_index.lua``) that puts the batch in the job history's indexes. ``wait`` is woken by
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

``job_page`` (the job history) walks ``P:{jobs}:index``, a sorted set of every
stored id scored by ``created`` (the store time when unset), newest first, and
reads the records in windows of ids (one MGET; GETs pipelined per node on a cluster).
A page starts at its cursor's score (``ZREVRANGEBYSCORE``, ties told apart by
id), so paging costs the same at any depth, and ``since``/``until`` are score
bounds. Each record is also in one index of its state, one of its task and one of
its queue (``P:{jobs}:s:<state>``, ``:t:<task>``, ``:q:<queue>``: the same
entries and scores), and ``P:{jobs}:where`` says which (id -> state, task and
queue), so that a record that changes state moves between them and one that goes
leaves each. Every key is in the hash slot ``{jobs}``: ``result_index.lua``,
``result_unindex.lua`` and ``settle_held.lua`` change them together, atomically,
on Redis Cluster too (there the record itself, in its own slot, is written just
before, in the same round trip). A page with one filter walks that filter's
index and reads about ``limit`` records. With several, it walks the smallest of
their indexes (``ZCARD``) and tests the others with ``ZMSCORE`` per window of
ids, so that it reads only the records that match (the first window is the page's
``limit`` + 1 ids, enough when the filters agree: Redis formats a score for every id
tested; each further one twice as large); ``JOBS_SCAN`` entries of the
walked index at most per page: a combination that matches nothing in them
returns what it found so far, with the cursor to search on from. (``ZINTER``
would compute the whole intersection on the server for every page, a cost that
grows with the indexes and that Redis pays while serving no one else; the walk
costs about the page.) The records read are still tested against the filters,
so an index entry a moment behind its record (on a cluster) is left out, never
shown wrongly. Ids leave the indexes with their records: on ``delete``, the
expired ones when ``store`` trims the expiry index (or ``cleanup`` runs), and
those ``job_page`` finds gone.

Records stored before these indexes existed are put in them once, lazily: the
first filtered ``job_page`` of a process finds no ``P:{jobs}:indexed`` marker
and, when the history holds more ids than ``P:{jobs}:where``, walks it
(``ZSCAN``, records read 1,000 at a time) and indexes the ids not indexed yet,
never over a place a newer write gave an id; then sets the marker. Writers of a
version without the indexes must be stopped first: what they store later is in
the history but not in the state, task and queue indexes.

Where the broker is the Redis broker on the same server (not a cluster),
``store_held`` stores the records of a worker's finished deliveries and acks
them in one script per queue (``settle_held.lua`` of the broker), token-checked.
Done-markers of ``gopherq.once`` are plain keys, ``P:once:{key}``, with a time
to live.

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

from gopherq.brokers.base import Broker
from gopherq.brokers.redis import HeldRecord, RedisBroker
from gopherq.errors import DecodeError
from gopherq.results.base import (
    JobCursor,
    JobPage,
    JobRecord,
    ResultBackend,
    Settling,
    sent_within,
)
from gopherq.states import State
from gopherq.stores.redis import Call, Client, Connection, scored, script

DONE_TTL = 60.0
"""Longest life of a completion token: it is only needed by waiters already blocked."""
INLINE_MAX = 4096
"""Largest record (encoded bytes) that travels in its completion token."""
CLEANUP_EVERY = 300.0
"""How often ``store`` trims the expiry index, per process."""
CHUNK = 1000
"""Expired ids ``cleanup`` takes out of the indexes per round trip."""
JOBS_SCAN = 10_000
"""Most index entries one ``job_page`` call reads: the window its filters search."""
JOBS_WINDOW_MAX = 2000
"""Ids the first round trip of ``job_page`` reads: ``limit`` + 1, what a page needs
when every id passes its filters; each further one (ids gone, or failing a filter's
test) twice as many as the one before, up to this."""
_NO_RECORD = ("",) * 7


class RedisResultBackend(ResultBackend):
    """Job records in Redis, by id. See the module docstring."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, expires: float = 86400.0) -> None:
        self.url = url
        self.expires = expires
        self._conn = Connection(url)
        self.prefix = self._conn.config.prefix
        self._expiry_key = f"{self.prefix}:{{_}}:result-expiry"
        self._jobs_base = f"{self.prefix}:{{jobs}}"
        self._jobs_key = self._jobs_base + ":index"
        self._indexed = False
        self._next_trim = time.time() + CLEANUP_EVERY

    def store(self, records: Sequence[JobRecord]) -> None:
        """Insert or replace records in one round trip; a finished one starts its time to
        live and wakes its waiters."""
        if not records:
            return
        now = time.time()
        done_ms = self._done_ms()
        store = script("result_store")
        calls: list[Call] = []
        expiring: dict[str, bool] = {}  # the last record of an id decides
        index_args: list[Any] = [repr(now), "0"]
        for record in records:
            blob, ttl_ms, inline, created = self._fields(record)
            calls.append((store, [self._key(record.id)], (blob, ttl_ms, done_ms, inline)))
            expiring[record.id] = bool(ttl_ms)
            index_args += (record.id, created, *_place(record))
        expiry = repr(now + self.expires)
        finished = [x for id, yes in expiring.items() if yes for x in (expiry, id)]
        if finished:
            calls.append(("ZADD", [self._expiry_key], finished))
        unfinished = [id for id, yes in expiring.items() if not yes]
        if unfinished:  # no time to live: unfinished records stay
            calls.append(("ZREM", [self._expiry_key], unfinished))
        # the indexes last: a reader may find a record not indexed yet, never an
        # indexed id whose record is not written yet (it would take that as gone)
        calls.append((script("result_index"), [self._jobs_base], index_args))
        self._conn.call(lambda c: self._conn.run_many(c, calls))
        self._trim(now)

    def store_held(self, broker: Broker, items: Sequence[Settling]) -> set[str] | None:
        """Records and acks of the deliveries still held, in one script per queue with
        the broker, when it is a Redis broker on this server (not a cluster); else None."""
        if not (isinstance(broker, RedisBroker) and broker.shares_server(self._conn.config)):
            return None
        now = time.time()
        held = [
            HeldRecord(i.delivery, i.ack, None, _NO_RECORD)
            if i.record is None
            else HeldRecord(
                i.delivery,
                i.ack,
                self._key(i.record.id),
                (*self._fields(i.record), *_place(i.record)),
            )
            for i in items
        ]
        index_args = (self._done_ms(), repr(now), repr(now + self.expires))
        ids = broker.settle_held(held, (self._jobs_base, self._expiry_key), index_args)
        self._trim(now)
        return ids

    def _fields(self, record: JobRecord) -> tuple[bytes, str, str, str]:
        """A record as ``result_store.lua`` and ``settle_held.lua`` take it: its blob,
        time to live in ms ('' while unfinished), inline flag, created time ('' unset)."""
        blob = msgpack.packb(record.to_map(), use_bin_type=True)
        created = "" if record.created is None else repr(float(record.created))
        if not record.state.finished:
            return blob, "", "0", created
        ttl_ms = str(self._ttl_ms())
        return blob, ttl_ms, "1" if len(blob) <= INLINE_MAX else "0", created

    def _ttl_ms(self) -> int:
        """A finished record's time to live in ms."""
        return max(int(self.expires * 1000), 1)

    def _done_ms(self) -> int:
        """A completion token's time to live in ms: never beyond its record's."""
        return min(self._ttl_ms(), int(DONE_TTL * 1000))

    def _trim(self, now: float) -> None:
        if now >= self._next_trim:
            self._next_trim = now + CLEANUP_EVERY
            self.cleanup()

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
            # Safe to repeat after a connection failure (a Redis restart leaves the
            # pooled connection dead): BLMOVE rotates the token within its list.
            token = self._conn.call(functools.partial(self._block, calls=calls))
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
        calls: list[Call] = [
            ("DEL", [key], ()),  # one key per DEL: cluster pipelines refuse several
            ("DEL", [key + ":done"], ()),
            ("ZREM", [self._expiry_key], (id,)),
            (script("result_unindex"), [self._jobs_base], (id,)),
        ]
        return bool(self._conn.call(lambda c: self._conn.run_many(c, calls))[0])

    def job_page(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        queue: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: JobCursor | None = None,
        limit: int = 100,
    ) -> JobPage:
        """Live records, newest first by ``created``, of one state, task and queue and
        sent within ``since``/``until`` where given, after ``after``. An index is read
        by score, so a page starts where its cursor points in one round trip: the
        history's without filters, the filter's with one, the smallest filter's with
        several (the others tested per window; ``JOBS_SCAN`` entries at most, see the
        module docstring: a page cut short by that bound still has a ``next``)."""
        if limit <= 0:
            return JobPage()
        filters = self._filter_keys(state, task, queue)
        if filters:
            self._backfill()
        walk, tests = self._plan(filters)
        needles = _needles(state, task, queue)
        window = limit + 1
        found: list[tuple[JobRecord, JobCursor]] = []
        position = self._start(after)
        timed = since is not None or until is not None
        scanned = offset = 0
        while len(found) <= limit:
            if scanned >= JOBS_SCAN:  # the filters searched their window: go on from here
                return JobPage([r for r, _ in found], position)
            read = functools.partial(
                self._by_score,
                walk,
                position,
                since=since,
                until=until,
                offset=offset,
                count=window,
            )
            entries = [(_text(id), score) for id, score in scored(self._conn.call(read))]
            if not entries:
                break
            scanned += len(entries)
            fresh = [(id, score) for id, score in entries if _before(score, id, position)]
            if not fresh:  # more ties at the position's score than one window holds
                offset += len(entries)
                continue
            offset = 0
            position = JobCursor(fresh[-1][1], fresh[-1][0])
            if tests:
                fresh = self._conn.call(functools.partial(self._in_all, tests, fresh))
            cut = len(fresh) > limit + 1 - len(found)
            if cut:  # read no more records than the page needs: go on after the last
                fresh = fresh[: limit + 1 - len(found)]
                position = JobCursor(fresh[-1][1], fresh[-1][0])
            ids = [id for id, _ in fresh]
            blobs = self._conn.call(functools.partial(self._get_many, ids))
            gone = [id for id, blob in zip(ids, blobs, strict=True) if blob is None]
            if gone:  # expired or deleted: out of the indexes
                self._conn.call(functools.partial(self._unindex, gone))
            for (id, score), blob in zip(fresh, blobs, strict=True):
                if blob is None or not all(n in blob for n in needles):
                    continue
                data = _unpack(blob)
                # the record decides (an index entry may lag behind it on a cluster);
                # only records kept are built
                if (
                    data is not None
                    and (state is None or data.get("state") == state.value)
                    and (task is None or data.get("task") == task)
                    and (queue is None or data.get("queue", "default") == queue)
                    and (not timed or sent_within(data.get("created"), since, until))
                ):
                    found.append((JobRecord.from_map(data), JobCursor(score, id)))
            if len(entries) < window and not cut:
                break
            # the window came up short (ids gone, or failing the tests): a larger one
            window = max(window, min(window * 2, JOBS_WINDOW_MAX))
        if len(found) <= limit:
            return JobPage([r for r, _ in found])
        return JobPage([r for r, _ in found[:limit]], found[limit - 1][1])

    def _filter_keys(self, state: State | None, task: str | None, queue: str | None) -> list[str]:
        """The indexes of the filters given (layout: the module docstring)."""
        base = self._jobs_base
        return [
            f"{base}:{kind}:{value}"
            for kind, value in (("s", state and state.value), ("t", task), ("q", queue))
            if value is not None
        ]

    def _plan(self, filters: list[str]) -> tuple[str, list[str]]:
        """The index a page walks (the history's, the filter's, or the smallest of the
        filters', by one ``ZCARD`` each in one round trip), and those it tests."""
        if len(filters) <= 1:
            return (filters[0] if filters else self._jobs_key), []
        calls: list[Call] = [("ZCARD", [key], ()) for key in filters]
        sizes = self._conn.call(lambda c: self._conn.run_many(c, calls))
        ranked = [key for _, key in sorted(zip(sizes, filters, strict=True))]
        return ranked[0], ranked[1:]

    def _in_all(
        self, keys: list[str], entries: list[tuple[str, float]], client: Client
    ) -> list[tuple[str, float]]:
        """The entries whose id is in every index of ``keys`` (``ZMSCORE``, one round trip)."""
        ids = [id for id, _ in entries]
        calls: list[Call] = [("ZMSCORE", [key], ids) for key in keys]
        scores = self._conn.run_many(client, calls)
        return [e for i, e in enumerate(entries) if all(s[i] is not None for s in scores)]

    def _backfill(self) -> None:
        """Index the records stored before the state, task and queue indexes existed,
        once (``P:{jobs}:indexed`` marks it done): see the module docstring."""
        if self._indexed:
            return
        marker = self._jobs_base + ":indexed"
        calls: list[Call] = [
            ("EXISTS", [marker], ()),
            ("ZCARD", [self._jobs_key], ()),
            ("HLEN", [self._jobs_base + ":where"], ()),
        ]
        done, listed, placed = self._conn.call(lambda c: self._conn.run_many(c, calls))
        if not done and listed > placed:  # some ids are in no index yet
            cursor: Any = 0
            while True:
                scan = functools.partial(self._scan_index, cursor)
                cursor, entries = self._conn.call(scan)
                if entries:
                    self._conn.call(functools.partial(self._index_old, entries))
                if not int(cursor):
                    break
        if not done:
            self._conn.call(lambda c: self._conn.run(c, "SET", [marker], ("1",)))
        self._indexed = True

    def _scan_index(self, cursor: Any, client: Client) -> tuple[Any, list[Any]]:
        found: Any = client.zscan(self._jobs_key, cursor, count=CHUNK)
        return found[0], list(found[1])

    def _index_old(self, entries: list[Any], client: Client) -> None:
        """Put the records of history entries ``(id, score)`` not indexed yet in their
        state, task and queue indexes, under the score they have."""
        ids = [_text(id) for id, _ in entries]
        blobs = self._get_many(ids, client)
        args: list[Any] = [repr(time.time()), "1"]
        for (_, score), blob in zip(entries, blobs, strict=True):
            if blob is not None:
                try:
                    record = _decode(blob)
                except DecodeError:  # a record no one can read is listed by no filter
                    continue
                args += (record.id, repr(float(score)), *_place(record))
        if len(args) > 2:
            self._conn.run(client, script("result_index"), [self._jobs_base], args)

    def _start(self, after: JobCursor | None) -> JobCursor | None:
        """Where a page starts: ``after``, with the index score of its id where the
        cursor has none (a record without ``created`` sorts at its first store time)."""
        if after is None or after.created is not None:
            return after
        score = self._conn.call(lambda c: c.zscore(self._jobs_key, after.id))
        return JobCursor(-math.inf if score is None else float(score), after.id)

    def _by_score(
        self,
        key: str,
        position: JobCursor | None,
        client: Client,
        *,
        since: float | None,
        until: float | None,
        offset: int,
        count: int,
    ) -> list[Any]:
        """Ids with scores (a ``WITHSCORES`` reply: ``scored``) of the index ``key`` from
        ``position`` (included: ties are told apart by id afterwards) down to ``since``,
        below ``until``."""
        top = "+inf" if until is None else "(" + repr(float(until))
        at = None if position is None else position.created
        if at is not None and (until is None or at < until):
            top = repr(at)
        bottom = "-inf" if since is None else repr(float(since))
        args = (top, bottom, "WITHSCORES", "LIMIT", offset, count)
        return list(self._conn.run(client, "ZREVRANGEBYSCORE", [key], args))

    def _get_many(self, ids: list[str], client: Client) -> list[Any]:
        """The records' blobs (None where gone): one MGET, or on a cluster, where the
        keys lie in many slots, GETs pipelined per node."""
        if not ids:
            return []
        if not self._conn.cluster:
            return list(self._conn.run(client, "MGET", [self._key(id) for id in ids], ()))
        calls: list[Call] = [("GET", [self._key(id)], ()) for id in ids]
        return self._conn.run_many(client, calls)

    def _unindex(self, ids: list[str], client: Client) -> Any:
        """Take ``ids`` out of every index of the job history."""
        return self._conn.run(client, script("result_unindex"), [self._jobs_base], ids)

    def cleanup(self) -> int:
        """Count records that expired since the last cleanup (Redis deleted them itself),
        and take them out of the job index."""
        now, count = time.time(), 0

        def forget(client: Client) -> int:
            expired = client.zrangebyscore(self._expiry_key, "-inf", now, start=0, num=CHUNK)
            if not expired:
                return 0
            calls: list[Call] = [
                ("ZREM", [self._expiry_key], expired),
                (script("result_unindex"), [self._jobs_base], expired),
            ]
            return int(self._conn.run_many(client, calls)[0])

        while removed := self._conn.call(forget):
            count += removed
        return count

    def mark(self, key: str, ttl: float) -> None:
        """Set the done-marker ``key`` (``P:once:{key}``) for ``ttl`` seconds."""
        ms = max(math.ceil(ttl * 1000), 1)
        self._conn.call(lambda c: self._conn.run(c, "SET", [self._mark_key(key)], ("1", "PX", ms)))

    def marked(self, key: str) -> bool:
        """Whether the done-marker ``key`` is set (Redis expires it)."""
        found = self._conn.call(lambda c: self._conn.run(c, "EXISTS", [self._mark_key(key)], ()))
        return bool(found)

    def _mark_key(self, key: str) -> str:
        return f"{self.prefix}:once:{{{key}}}"

    def close(self) -> None:
        """Close this process's connections; the next call reconnects."""
        self._conn.close()

    def _key(self, id: str) -> str:
        return f"{self.prefix}:result:{{{id}}}"


def _before(score: float, id: str, position: JobCursor | None) -> bool:
    """Whether index entry ``(score, id)`` comes after ``position`` in the listing."""
    if position is None:
        return True
    created = position.created if position.created is not None else -math.inf
    return score < created or (score == created and id < position.id)


def _place(record: JobRecord) -> tuple[str, str, str]:
    """The state, task and queue whose indexes hold ``record`` (task '' for none)."""
    return record.state.value, record.task or "", record.queue


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _needles(state: State | None, task: str | None, queue: str | None) -> list[bytes]:
    """What a record's blob holds when it passes the filters: each filtered field's
    key and value as msgpack packs them, one after the other (``to_map`` writes every
    one of them). A blob without them is left out without being decoded; one with
    them is still checked field by field."""
    pairs = (("state", None if state is None else state.value), ("task", task), ("queue", queue))
    return [msgpack.packb(k) + msgpack.packb(v) for k, v in pairs if v is not None]


def _unpack(blob: bytes) -> dict[Any, Any]:
    """The map of a record's blob; ``DecodeError`` if it is not one."""
    try:
        data = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"unreadable job record: {exc}") from exc
    if not isinstance(data, dict):
        raise DecodeError("malformed job record: not a map")
    return data


def _decode(blob: bytes) -> JobRecord:
    return JobRecord.from_map(_unpack(blob))
