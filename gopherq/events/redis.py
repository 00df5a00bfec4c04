"""Redis event backend: a capped Redis Stream in the broker's Redis (or Redis Cluster).

The default event backend when the broker is Redis: ``events = "broker"`` with a
``redis://`` broker names it.

Features:
    * ``publish`` adds the batch with one script call (``event_add.lua``): per
      event one ``XADD ... MAXLEN ~ max_count``, an entry of one field, ``e``, a
      msgpack array (``Event[:8]``); and per event of a job, the entry's id
      appended to the job's list (``P:{events}:job:<id>``: its first
      ``JOB_KEEP`` ids; it expires ``max_age`` after the job's last event, or,
      once the stream holds ``max_count`` entries, twice the span of time the
      stream holds, so that there are about as many lists as jobs in it).
      Delivery is at least once: a batch whose reply is lost to a connection
      failure is sent again.
    * ``read`` is ``XREAD BLOCK`` from the cursor: a blocked reader wakes as soon
      as an event is added, with no polling. It blocks on a connection of its
      own, checked out of the client's pool for the call, so it never holds a
      connection the broker's calls use. Readers filter types themselves and
      move their cursor past the entries they skip.
    * ``last`` walks the stream backwards with ``XREVRANGE``; given a time, only
      down to the entry id of that time (less ``CLOCK_SLACK``). Worker events
      (``SIDE_TYPES``) are also added, under the same ids, to a second stream
      (``event_add.lua``), which ``last`` of those types alone walks instead.
    * ``job_events`` reads the job's list and each of its entries
      (``event_job.lua``, one round trip): it costs the job's events, however
      long the stream. Entries trimmed from the stream are left out. Events
      published before the lists existed are put in them once, lazily: the
      first ``job_events`` of a process that finds no ``P:{events}:indexed``
      marker walks the stream back from its newest entry (``event_index.lua``
      per ``CHUNK`` entries), then sets it.
    * Retention: by count on every ``XADD`` (approximate: Redis trims whole
      nodes of about 100 entries) and exactly in ``cleanup``; by age, from the
      head of the stream, with ``XTRIM MINID``: by entry id (server time) about
      once a second per publishing process, and by the events' own time in
      ``cleanup``.

Cursors are numbers, like those of the other backends: the stream id
``ms-seq`` as ``ms * 1,000,000 + seq``, so they order as integers and survive
restarts. The encoding holds while a sequence number stays below a million,
that is unless a million events share one millisecond of the server's clock
(only its clock stepping back under load makes that possible): past that,
cursors would run into the next millisecond's and a resumed read could skip
or repeat events.

URL: any Redis broker URL (``redis://``, ``rediss://``, ``unix://``,
``redis+cluster://``); the ``prefix`` query option applies here too.

Options:
    max_age (float): seconds an event is kept. Default one day.
    max_count (int): most events kept; the oldest go first. Default 100,000.

Layout (``P`` is the prefix)::

    P:{events}:stream   stream, one entry per event: field ``e`` = msgpack Event[:8]
                        (one hash slot, so it works on Redis Cluster)
    P:{events}:workers  stream, the worker events of the first, with the same ids
    P:{events}:job:<id> list, the entry ids of job <id>'s events, oldest first
    P:{events}:indexed  string, set once the events from before the job lists are in them
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from gopherq.errors import DecodeError
from gopherq.events.base import (
    CLOCK_SLACK,
    JOB_EVENTS,
    SIDE_TYPES,
    Event,
    EventBackend,
    cursor_number,
    pack_event,
)
from gopherq.stores.redis import Call, Client, Connection, script

SEQ = 1_000_000
"""Cursor = stream id ``ms-seq`` as ``ms * SEQ + seq``."""
TRIM_EVERY = 1.0
"""Seconds between the age trims a publishing process adds to its batches."""
CHUNK = 500
"""Most entries one XREAD, XRANGE or XREVRANGE returns."""
FIELD = b"e"
JOB_KEEP = 5000
"""Most entry ids a job's list keeps: its first ones (a task that reports progress
that often has its first events shown)."""
FINAL_TYPES = frozenset(
    {"task-succeeded", "task-failed", "task-dead", "task-cancelled", "task-expired"}
)
"""Event types after which a task has no more (unless it is sent again)."""


class RedisEventBackend(EventBackend):
    """Events in a Redis stream. See the module docstring."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        max_age: float = 86400.0,
        max_count: int = 100_000,
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.max_count = max(max_count, 1)
        self._conn = Connection(url)
        self.key = f"{self._conn.config.prefix}:{{events}}:stream"
        self.side_key = f"{self._conn.config.prefix}:{{events}}:workers"
        self._job_prefix = f"{self._conn.config.prefix}:{{events}}:job:"
        self._indexed = False
        self._next_trim = 0.0

    def publish(self, events: Sequence[Event]) -> None:
        """Append the batch in one round trip; about once a second also trim by age."""
        if not events:
            return
        keys = [self.key, self.side_key]
        args: list[Any] = [self.max_count, self._ttl_ms(), JOB_KEEP]
        lists: dict[str, int] = {}  # a job's list: its KEYS index (1-based)
        for e in events:
            if e.type in SIDE_TYPES:
                second = 2
            elif e.id is None:
                second = 0
            else:
                second = lists.setdefault(e.id, len(keys) + 1)
                if second > len(keys):
                    keys.append(self._job_prefix + e.id)
            args += (second, pack_event(e))
        calls: list[Call] = [(script("event_add"), keys, args)]
        now = time.time()
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY
            minid = ("MINID", "~", _stream_id(now - self.max_age))
            calls += [("XTRIM", [key], minid) for key in (self.key, self.side_key)]
        self._conn.call(lambda c: self._conn.run_many(c, calls))

    def read(
        self,
        cursor: str,
        *,
        types: frozenset[str] | None = None,
        limit: int = 100,
        timeout: float = 0.0,
    ) -> tuple[list[Event], str]:
        """Events after ``cursor`` of ``types``; blocks with XREAD BLOCK up to ``timeout``."""
        start = after = _to_id(cursor)
        limit = max(limit, 1)
        count = limit if types is None else max(limit, CHUNK)
        deadline = time.monotonic() + timeout
        found: list[Event] = []
        while True:
            remaining = deadline - time.monotonic()
            block = None
            if remaining > 0:
                block = max(int(min(remaining, self._conn.max_block) * 1000), 1)
            read = functools.partial(self._xread, after=after, count=count, block=block)
            entries = self._conn.call(read, retry=False)
            for entry_id, fields in entries:
                after = _text(entry_id)
                event = _unpack(fields, after)
                if types is None or event.type in types:
                    found.append(event)
                    if len(found) >= limit:
                        break
            if found or (not entries and (block is None or time.monotonic() >= deadline)):
                return found, cursor if after == start else _to_cursor(after)

    def last(
        self,
        limit: int = 1,
        *,
        types: frozenset[str] | None = None,
        since: float | None = None,
    ) -> list[Event]:
        """The newest ``limit`` events of ``types`` (from ``since``), oldest first:
        XREVRANGE down to the id of ``since`` less ``CLOCK_SLACK`` (ids are the
        server's milliseconds) or the first event that much older by its own time."""
        found: list[Event] = []
        before = "+"
        key = self.side_key if types is not None and types <= SIDE_TYPES else self.key
        low = "-" if since is None else _stream_id(since - CLOCK_SLACK)
        stop = -math.inf if since is None else since - CLOCK_SLACK
        after = -math.inf if since is None else since
        count = limit if types is None and since is None else min(max(limit, 100), CHUNK)
        while len(found) < limit:
            entries = self._conn.call(
                functools.partial(self._xrevrange, key, before=before, low=low, count=count)
            )
            for entry_id, fields in entries:
                event = _unpack(fields, entry_id)
                if event.time < stop:  # events' own times: as the other backends
                    return found[::-1]
                if (types is None or event.type in types) and event.time >= after:
                    found.append(event)
                    if len(found) >= limit:
                        break
            if len(entries) < count:
                break
            before = "(" + _text(entries[-1][0])
            count = limit if types is None and since is None else CHUNK
        return found[::-1]

    def job_events(
        self,
        id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = JOB_EVENTS,
    ) -> list[Event]:
        """The events of task ``id``, oldest first, from its list of entry ids (one
        round trip): from ``since`` (less ``CLOCK_SLACK``) on, up to its last event (it
        succeeded, failed for good, was cancelled or expired) or ``until`` (plus
        ``CLOCK_SLACK``), where given; its first ``limit``."""
        self._backfill()
        low, high = "0", ""
        if since is not None:
            low = str(max(int((since - CLOCK_SLACK) * 1000), 0))
            if until is not None:
                high = str(max(int((max(until, since) + CLOCK_SLACK) * 1000), 0))
        keys = [self.key, self._job_prefix + id]
        read = functools.partial(self._run, script("event_job"), keys, (low, high, limit))
        flat = self._conn.call(read)
        found: list[Event] = []
        for entry_id, blob in zip(flat[::2], flat[1::2], strict=True):
            event = _unpack({FIELD: blob}, entry_id)
            if event.id == id:
                found.append(event)
                if event.type in FINAL_TYPES:
                    break
        return found[:limit]

    def _backfill(self) -> None:
        """Put the events published before the jobs' lists existed into them, once
        (``P:{events}:indexed`` marks it done): see the module docstring."""
        if self._indexed:
            return
        marker = self.key.removesuffix(":stream") + ":indexed"
        if not self._conn.call(lambda c: self._conn.run(c, "EXISTS", [marker], ())):
            before = "+"
            while True:
                read = functools.partial(
                    self._xrevrange, self.key, before=before, low="-", count=CHUNK
                )
                entries = self._conn.call(read)
                keys: list[str] = []
                args: list[Any] = [self._ttl_ms(), JOB_KEEP]
                for entry_id, fields in entries:
                    try:
                        event = _unpack(fields, entry_id)
                    except DecodeError:  # an entry no one can read belongs to no job
                        continue
                    if event.id is not None and event.type not in SIDE_TYPES:
                        keys.append(self._job_prefix + event.id)
                        args.append(_text(entry_id))
                if keys:
                    index = functools.partial(self._run, script("event_index"), keys, args)
                    self._conn.call(index)
                if len(entries) < CHUNK:
                    break
                before = "(" + _text(entries[-1][0])
            self._conn.call(lambda c: self._conn.run(c, "SET", [marker], ("1",)))
        self._indexed = True

    def _run(self, script_: Any, keys: list[str], args: Sequence[Any], client: Client) -> Any:
        return self._conn.run(client, script_, keys, args)

    def _ttl_ms(self) -> str:
        """A job list's time to live in ms: the events' retention by age."""
        return str(max(math.ceil(self.max_age * 1000), 1))

    def cleanup(self) -> int:
        """Trim to ``max_count`` events, then drop those older than ``max_age`` by their
        own time, from the head of the stream; returns how many went."""
        conn = self._conn
        dropped = int(
            conn.call(lambda c: c.xtrim(self.key, maxlen=self.max_count, approximate=False))
        )
        cutoff = time.time() - self.max_age
        start, cut = "-", None  # cut: id of the first event to keep
        while cut is None:
            entries = conn.call(functools.partial(self._xrange, start=start))
            if not entries:
                break
            for entry_id, fields in entries:
                start = _text(entry_id)
                if _unpack(fields, start).time >= cutoff:
                    cut = start
                    break
            else:
                start = "(" + start
        if cut is None and start != "-":  # all past the age: up to the last one seen
            ms, _, seq = start[1:].partition("-")
            cut = f"{ms}-{int(seq) + 1}"
        if cut is not None and cut != "-":
            minid = cut
            dropped += int(conn.call(lambda c: c.xtrim(self.key, minid=minid, approximate=False)))
        conn.call(self._trim_side)
        return dropped

    def _trim_side(self, client: Client) -> None:
        """Drop the worker events older than the event stream's first entry."""
        first = client.xrange(self.key, count=1)
        if first:
            client.xtrim(self.side_key, minid=_text(first[0][0]), approximate=False)
        else:
            client.xtrim(self.side_key, maxlen=0, approximate=False)

    def close(self) -> None:
        """Close this process's connections; the next call reconnects."""
        self._conn.close()

    def _xread(self, client: Client, after: str, count: int, block: int | None) -> list[Any]:
        """Entries after ``after``: redis-py's own XREAD, which takes a pooled connection
        for the call (not one of those the broker's lean calls keep)."""
        reply: Any = client.xread({self.key: after}, count=count, block=block)
        return list(reply[0][1]) if reply else []

    def _xrevrange(self, key: str, client: Client, before: str, low: str, count: int) -> list[Any]:
        return list(client.xrevrange(key, max=before, min=low, count=count) or ())

    def _xrange(self, client: Client, start: str, end: str = "+") -> list[Any]:
        return list(client.xrange(self.key, min=start, max=end, count=CHUNK) or ())


def _unpack(fields: Any, entry_id: Any) -> Event:
    """The event of a stream entry, its id as cursor."""
    try:
        data = msgpack.unpackb(fields[FIELD], raw=False)
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"unreadable event {entry_id!r}: {exc}") from exc
    return Event.from_array(data, _to_cursor(_text(entry_id)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _to_cursor(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return str(int(ms) * SEQ + int(seq or 0))


def _to_id(cursor: str) -> str:
    """The stream id of a cursor; ``ConfigurationError`` if it is not one."""
    ms, seq = divmod(cursor_number(cursor), SEQ)
    return f"{ms}-{seq}"


def _stream_id(unix: float) -> str:
    return f"{max(int(unix * 1000), 0)}-0"
