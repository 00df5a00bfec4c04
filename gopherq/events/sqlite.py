"""SQLite event backend: an ``events`` table in the broker's own database file.

The default event backend when the broker is SQLite, so that one file holds
messages, results and events. A publish is one ``BEGIN IMMEDIATE``
transaction that stores its whole batch as one row (a msgpack array of
events): a row costs a few microseconds, so a batch of hundreds costs little
more than one event. Events are numbered in order across rows; an event's
cursor is its number, and a row is keyed by the number of its last event.
Writers are serialized by SQLite, so a reader that has seen event N has seen
every event up to N. Retention never deletes the newest row, so numbers are
never reused and a saved cursor never skips new events.

A blocked ``read`` sleeps on the file's change notification (inotify on the
``-wal`` file; see ``gopherq.stores.sqlite``) and wakes within
milliseconds of the commit that adds events; it polls where inotify is
missing. Readers decode rows and filter by type themselves.

``job_events`` reads the rows that hold one task's events through a small
index, ``event_jobs`` (row, task id), written with each row and trimmed with
the rows: reading a task's timeline costs a few rows, however long the log.
Rows written before that index existed are not found by it.

Worker events (``SIDE_TYPES``: online, heartbeat, offline) are also written one
per row to ``event_workers`` under their numbers, where ``last`` of those types
alone reads them: a few rows, not the whole log (worker events published before
that table existed are not found there).

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

Options:
    max_age (float): seconds an event is kept. Default one day.
    max_count (int): most events kept; the oldest go first. Default 100,000.
        Publishers delete what is past either limit about once a second.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator, Sequence

from gopherq.events.base import (
    CLOCK_SLACK,
    JOB_EVENTS,
    SIDE_TYPES,
    Event,
    EventBackend,
    cursor_number,
    pack_event,
    pack_events,
    unpack_event,
    unpack_events,
)
from gopherq.stores.sqlite import Database, sqlite_path

CLEANUP_EVERY = 1.0
"""Seconds between retention passes of one publishing process."""
ROW_EVENTS = 100
"""Most events stored in one row; a larger batch takes several. Reading the newest
events decodes a whole row (a busy worker publishes thousands at once), so a row
holds one default page: the newest 100 events then cost half the decoding of rows
of 250, and a batch of thousands is stored no slower."""
ROWS_PER_QUERY = 64
JOB_SLOTS = 1024
"""Task ids a row may name in ``event_jobs``: more than ``ROW_EVENTS``."""


class SQLiteEventBackend(EventBackend):
    """Events in a table of the broker's SQLite file. See the module docstring."""

    # events: one row per published batch
    #   last    number of the row's last event (events are numbered from 1
    #           across rows, in commit order); the row holds last-count+1..last
    #   count   how many events the row holds
    #   time    when the row's newest event happened: retention by age
    #   events  msgpack array of events, each an array (Event[:8])
    #
    # event_jobs: which rows hold events of which task, for job_events
    #   seq     the row (events.last) * JOB_SLOTS + the task's place in it: in row
    #           order, so that retention deletes a range of rowids
    #   id      a task id with events in that row
    #
    # event_workers: the worker events (SIDE_TYPES) again, one row each, for last
    #   num     the event's number  time  its time  event  msgpack Event[:8]
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS events (
            last INTEGER PRIMARY KEY,
            count INTEGER NOT NULL,
            time REAL NOT NULL,
            events BLOB NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS event_jobs (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS event_jobs_id ON event_jobs (id)",
        """CREATE TABLE IF NOT EXISTS event_workers (
            num INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            event BLOB NOT NULL
        )""",
    )

    def __init__(
        self,
        url: str = "sqlite:///./gopherq.db",
        *,
        max_age: float = 86400.0,
        max_count: int = 100_000,
    ) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.max_age = max_age
        self.max_count = max(max_count, 1)
        self._db = Database(self.path, self.SCHEMA)
        self._next_cleanup = 0.0

    def publish(self, events: Sequence[Event]) -> None:
        """Store the batch in one transaction; about once a second also apply retention."""
        if not events:
            return
        chunks = [events[i : i + ROW_EVENTS] for i in range(0, len(events), ROW_EVENTS)]
        blobs = [(len(chunk), max(e.time for e in chunk), pack_events(chunk)) for chunk in chunks]
        workers: list[tuple[int, float, bytes]] = []
        with self._db.write() as conn:
            (last,) = conn.execute("SELECT coalesce(max(last), 0) FROM events").fetchone()
            rows: list[tuple[int, int, float, bytes]] = []
            jobs: list[tuple[int, str]] = []
            for chunk, (count, newest, blob) in zip(chunks, blobs, strict=True):
                workers.extend(
                    (last + 1 + k, e.time, pack_event(e))
                    for k, e in enumerate(chunk)
                    if e.type in SIDE_TYPES
                )
                last += count
                rows.append((last, count, newest, blob))
                named = dict.fromkeys(e.id for e in chunk if e.id is not None)
                jobs.extend((last * JOB_SLOTS + k, id) for k, id in enumerate(named))
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
            conn.executemany("INSERT INTO event_jobs VALUES (?, ?)", jobs)
            conn.executemany("INSERT INTO event_workers VALUES (?, ?, ?)", workers)
            now = time.time()
            if now >= self._next_cleanup:
                self._next_cleanup = now + CLEANUP_EVERY
                self._trim(conn, now)

    def read(
        self,
        cursor: str,
        *,
        types: frozenset[str] | None = None,
        limit: int = 100,
        timeout: float = 0.0,
    ) -> tuple[list[Event], str]:
        """Events after ``cursor`` of ``types``; blocks on the file's changes up to ``timeout``."""
        after = cursor_number(cursor)
        deadline = time.monotonic() + timeout
        waiter = self._db.waiter() if timeout > 0 else None
        if waiter is not None:
            waiter.reset()  # changes before this point are seen by the first query
        while True:
            events, after = self._read(after, types, limit)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or waiter is None:
                return events, str(after)
            waiter.wait(remaining)

    def last(
        self,
        limit: int = 1,
        *,
        types: frozenset[str] | None = None,
        since: float | None = None,
    ) -> list[Event]:
        """The newest ``limit`` events of ``types`` (from ``since``), oldest first: rows
        newest first, each read from its end, down to the first event ``CLOCK_SLACK``
        seconds older than ``since``."""
        stop = -math.inf if since is None else since - CLOCK_SLACK
        after = -math.inf if since is None else since
        if types is not None and types <= SIDE_TYPES:
            return self._last_side(limit, types, stop, after)
        found: list[Event] = []
        query = "SELECT last, events FROM events WHERE last < ? ORDER BY last DESC LIMIT ?"
        before, batch = 2**63 - 1, 4
        while True:
            with self._db.read() as conn:
                rows = conn.execute(query, (before, batch)).fetchall()
            for last, blob in rows:
                arrays = unpack_events(blob)
                first = last - len(arrays) + 1
                for offset in range(len(arrays) - 1, -1, -1):
                    array = arrays[offset]
                    # an array is Event[:8]: type and time first; events are built
                    # only for those kept
                    if not isinstance(array, list) or len(array) < 2:
                        Event.from_array(array, "")  # raises DecodeError
                    kind, at = array[0], array[1]
                    if isinstance(at, int | float) and at < stop:
                        return found[::-1]
                    if types is not None and not (isinstance(kind, str) and kind in types):
                        continue
                    event = Event.from_array(array, str(first + offset))
                    if event.time >= after:
                        found.append(event)
                        if len(found) >= limit:
                            return found[::-1]
            if len(rows) < batch:
                return found[::-1]
            before, batch = rows[-1][0], ROWS_PER_QUERY

    def _last_side(
        self, limit: int, types: frozenset[str], stop: float, after: float
    ) -> list[Event]:
        """``last`` of worker events only, from ``event_workers``."""
        found: list[Event] = []
        query = """SELECT num, time, event FROM event_workers WHERE num < ?
            ORDER BY num DESC LIMIT ?"""
        before = 2**63 - 1
        while True:
            with self._db.read() as conn:
                rows = conn.execute(query, (before, ROWS_PER_QUERY)).fetchall()
            for num, at, blob in rows:
                if at < stop:
                    return found[::-1]
                event = Event.from_array(unpack_event(blob), str(num))
                if event.type in types and event.time >= after:
                    found.append(event)
                    if len(found) >= limit:
                        return found[::-1]
            if len(rows) < ROWS_PER_QUERY:
                return found[::-1]
            before = rows[-1][0]

    def job_events(
        self,
        id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = JOB_EVENTS,
    ) -> list[Event]:
        """The retained events of task ``id``, oldest first: its first ``limit``, from
        the rows the ``event_jobs`` index names."""
        found: list[Event] = []
        query = f"""SELECT j.seq, e.last, e.events FROM event_jobs j
            JOIN events e ON e.last = j.seq / {JOB_SLOTS}
            WHERE j.id = ? AND j.seq > ? ORDER BY j.seq LIMIT ?"""
        after = 0
        while len(found) < limit:
            with self._db.read() as conn:
                rows = conn.execute(query, (id, after, ROWS_PER_QUERY)).fetchall()
            for _, last, blob in rows:
                found.extend(e for e in _events(last, blob) if e.id == id)
            if len(rows) < ROWS_PER_QUERY:
                break
            after = rows[-1][0]
        return found[:limit]

    def cleanup(self) -> int:
        """Delete events past retention; returns how many."""
        with self._db.write() as conn:
            return self._trim(conn, time.time())

    def close(self) -> None:
        """Close this process's connections; the next call reopens them."""
        self._db.close()

    def _read(
        self, after: int, types: frozenset[str] | None, limit: int
    ) -> tuple[list[Event], int]:
        """Up to ``limit`` events numbered above ``after``, and the number read up to."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT last, events FROM events WHERE last > ? ORDER BY last LIMIT ?",
                (after, ROWS_PER_QUERY),
            ).fetchall()
        found: list[Event] = []
        for last, blob in rows:
            for event in _events(last, blob):
                number = int(event.cursor)
                if number <= after:
                    continue
                after = number
                if types is None or event.type in types:
                    found.append(event)
                    if len(found) >= limit:
                        return found, after
        return found, after

    def _trim(self, conn: sqlite3.Connection, now: float) -> int:
        """Delete rows wholly past ``max_count`` or ``max_age``, never the newest row (its
        number keeps numbering going). Rows are in time order, near enough: events are
        stamped a few milliseconds before their batch commits."""
        (newest,) = conn.execute("SELECT max(last) FROM events").fetchone()
        if newest is None:
            return 0
        first_young = conn.execute(
            "SELECT last FROM events WHERE time >= ? ORDER BY last LIMIT 1",
            (now - self.max_age,),
        ).fetchone()
        keep_from = min(first_young[0] if first_young else newest, newest)
        cut = max(newest - self.max_count, 0)
        # Rows ending at or below ``cut`` hold only events past the count; rows
        # before ``keep_from`` only events past the age.
        bound = max(cut + 1, keep_from)  # rows below it go
        conn.execute("DELETE FROM event_jobs WHERE seq < ?", (bound * JOB_SLOTS,))
        rows = conn.execute(
            "DELETE FROM events WHERE last < ? RETURNING count", (bound,)
        ).fetchall()
        first = conn.execute("SELECT last - count + 1 FROM events ORDER BY last LIMIT 1")
        conn.execute("DELETE FROM event_workers WHERE num < ?", (first.fetchone()[0],))
        return sum(count for (count,) in rows)


def _events(last: int, blob: bytes) -> Iterator[Event]:
    """The events of a row, each with its number as cursor."""
    arrays = unpack_events(blob)
    first = last - len(arrays) + 1
    for offset, array in enumerate(arrays):
        yield Event.from_array(array, str(first + offset))
