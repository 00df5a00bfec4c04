"""SQLite result backend: job records in the broker's own database file.

The default result backend when the broker is SQLite: one ``results`` table
beside the broker's tables, in the same file, so one file holds everything and
``sqlite:///./gopherq.db`` names both. Processes share it as they share the
broker (WAL mode, one ``BEGIN IMMEDIATE`` transaction per write, a connection
per process and thread; see ``gopherq.brokers.sqlite`` for durability).

``wait`` sleeps on the same change notification as a blocked ``reserve``
(inotify on the ``-wal`` file) and wakes within milliseconds of the commit that
stores the record; it falls back to polling where inotify is missing.

Where the broker is the SQLite broker of the same file, ``store_held`` stores the
records of a worker's finished deliveries and acks them in one transaction,
token-checked (``SQLiteBroker.settle_held``).

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

Options:
    expires (float): seconds a finished record is kept after it is stored.
        Default one day. Expired records are invisible at once; ``cleanup``
        deletes them, and ``store`` does so itself every few minutes.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from gopherq.brokers.base import Broker
from gopherq.brokers.sqlite import SQLiteBroker
from gopherq.errors import DecodeError
from gopherq.results.base import JobCursor, JobPage, JobRecord, ResultBackend, Settling
from gopherq.states import State
from gopherq.stores.sqlite import Database, sqlite_path

# How often store() deletes expired records, per process, and at most how many.
CLEANUP_EVERY = 300.0
CLEANUP_BATCH = 5000


class SQLiteResultBackend(ResultBackend):
    """Job records in a table of the broker's SQLite file. See the module docstring."""

    # results
    #   id          task id
    #   state, task, queue, created, finished   copies of the record's fields,
    #               for job-history queries by task, state and queue, newest
    #               (created, then id) first: an index per filter, each in that
    #               order, so that a page is a range of one index
    #   expires_at  when a finished record expires; NULL while unfinished
    #   record      msgpack of JobRecord.to_map(), the whole truth
    #
    # marks: done-markers of gopherq.once, by key, until expires_at
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS results (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            task TEXT NOT NULL,
            queue TEXT NOT NULL,
            created REAL,
            finished REAL,
            expires_at REAL,
            record BLOB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS results_task_created ON results (task, created, id)",
        "CREATE INDEX IF NOT EXISTS results_state_created ON results (state, created, id)",
        "CREATE INDEX IF NOT EXISTS results_queue_created ON results (queue, created, id)",
        "CREATE INDEX IF NOT EXISTS results_finished ON results (finished)",
        "CREATE INDEX IF NOT EXISTS results_created_id ON results (created, id)",
        "CREATE INDEX IF NOT EXISTS results_expires_at ON results (expires_at)",
        """CREATE TABLE IF NOT EXISTS marks (
            key TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID""",
    )

    DROPPED = ("results_task", "results_state", "results_created")
    """Indexes of earlier releases, each on one column: the ones above replace them."""

    _UPSERT = """INSERT INTO results (id, state, task, queue, created, finished, expires_at, record)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, task = excluded.task,
            queue = excluded.queue, created = excluded.created, finished = excluded.finished,
            expires_at = excluded.expires_at, record = excluded.record"""
    _LIVE = "(expires_at IS NULL OR expires_at > ?)"

    def __init__(self, url: str = "sqlite:///./gopherq.db", *, expires: float = 86400.0) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.expires = expires
        self._db = Database(self.path, self.SCHEMA, dropped=self.DROPPED)
        self._next_cleanup = 0.0

    def store(self, records: Sequence[JobRecord]) -> None:
        """Insert or replace records in one transaction; a finished one starts its time to
        live."""
        if not records:
            return
        with self._db.write() as conn:
            self._write(conn, records)

    def store_held(self, broker: Broker, items: Sequence[Settling]) -> set[str] | None:
        """Records and acks of the deliveries still held, in one transaction with the
        broker, when it is the SQLite broker of this very file; else None."""
        if not (isinstance(broker, SQLiteBroker) and _same_file(broker.path, self.path)):
            return None
        self._db.connection()  # opened once: the results table exists in the file

        def write(conn: sqlite3.Connection, held: set[str]) -> None:
            records = [i.record for i in items if i.record is not None and i.delivery.id in held]
            if records:
                self._write(conn, records)

        acks = {i.delivery.id for i in items if i.ack}
        return broker.settle_held([i.delivery for i in items], acks, write)

    def _write(self, conn: sqlite3.Connection, records: Sequence[JobRecord]) -> None:
        """Upsert ``records`` within the caller's write transaction (and, every few
        minutes, delete expired ones)."""
        now = time.time()
        rows = [
            (
                r.id,
                r.state.value,
                r.task,
                r.queue,
                r.created,
                r.finished,
                now + self.expires if r.state.finished else None,
                msgpack.packb(r.to_map(), use_bin_type=True),
            )
            for r in records
        ]
        conn.executemany(self._UPSERT, rows)
        if now >= self._next_cleanup:
            self._next_cleanup = now + CLEANUP_EVERY
            conn.execute(
                """DELETE FROM results WHERE rowid IN (SELECT rowid FROM results
                WHERE expires_at <= ? LIMIT ?)""",
                (now, CLEANUP_BATCH),
            )

    def get(self, id: str) -> JobRecord | None:
        """The record of ``id``, or None if unknown or expired."""
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT record FROM results WHERE id = ? AND {self._LIVE}", (id, time.time())
            ).fetchone()
        return None if row is None else _decode(row[0])

    def wait(self, id: str, timeout: float | None) -> JobRecord | None:
        """Block until ``id`` is finished or ``timeout`` passes; the record as it then is."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        waiter = self._db.waiter() if timeout is None or timeout > 0 else None
        if waiter is not None:
            waiter.reset()  # changes before this point are seen by the first get()
        while True:
            record = self.get(id)
            remaining = deadline - time.monotonic()
            if (record is not None and record.state.finished) or remaining <= 0 or waiter is None:
                return record
            waiter.wait(remaining)

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
        """Live records, newest first, of one state, task and queue and sent within
        ``since``/``until`` where given, after ``after``: a range of one index.
        Records without ``created`` come last."""
        where = [self._LIVE]
        args: list[Any] = [time.time()]
        for column, value in (("state", state), ("task", task), ("queue", queue)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        for condition, bound in (("created >= ?", since), ("created < ?", until)):
            if bound is not None:
                where.append(condition)
                args.append(bound)
        # Records without ``created`` come last (NULL is the least value): a cursor
        # among the others reads on into them by a second range, not by an OR that
        # would keep the first from being a range of its index.
        tail = ["created IS NULL", *where]
        tail_args = list(args)
        if after is not None and after.created is not None:
            where.append("(created, id) < (?, ?)")
            args.extend(after)
        elif after is not None:
            where = [*tail, "id < ?"]
            args = [*tail_args, after.id]
        limit = max(limit, 0)
        with self._db.read() as conn:
            rows = self._rows(conn, where, args, limit + 1)
            more = limit + 1 - len(rows)
            timed = since is not None or until is not None
            if more > 0 and after is not None and after.created is not None and not timed:
                rows += self._rows(conn, tail, tail_args, more)
        records = [_decode(row[2]) for row in rows[:limit]]
        if len(rows) <= limit or not limit:
            return JobPage(records)
        created, id, _ = rows[limit - 1]
        return JobPage(records, JobCursor(created, id))

    @staticmethod
    def _rows(conn: sqlite3.Connection, where: list[str], args: list[Any], limit: int) -> list[Any]:
        query = f"""SELECT created, id, record FROM results WHERE {" AND ".join(where)}
            ORDER BY created DESC, id DESC LIMIT ?"""
        return conn.execute(query, (*args, limit)).fetchall()

    def delete(self, id: str) -> bool:
        """Forget a record; True if it existed (expired ones count as gone)."""
        with self._db.write() as conn:
            row = conn.execute(
                f"DELETE FROM results WHERE id = ? RETURNING {self._LIVE}", (id, time.time())
            ).fetchone()
        return bool(row and row[0])

    def cleanup(self) -> int:
        """Delete expired records; returns how many."""
        with self._db.write() as conn:
            now = time.time()
            conn.execute("DELETE FROM marks WHERE expires_at <= ?", (now,))
            count: int = conn.execute("DELETE FROM results WHERE expires_at <= ?", (now,)).rowcount
            return count

    def mark(self, key: str, ttl: float) -> None:
        """Set the done-marker ``key`` for ``ttl`` seconds."""
        with self._db.write() as conn:
            conn.execute(
                """INSERT INTO marks (key, expires_at) VALUES (?, ?)
                ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at""",
                (key, time.time() + ttl),
            )

    def marked(self, key: str) -> bool:
        """Whether the done-marker ``key`` is set and unexpired."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM marks WHERE key = ? AND expires_at > ?", (key, time.time())
            ).fetchone()
        return row is not None

    def close(self) -> None:
        """Close this process's connections; the next call reopens them."""
        self._db.close()


def _same_file(a: str, b: str) -> bool:
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:
        return False


def _decode(blob: bytes) -> JobRecord:
    try:
        data = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"unreadable job record: {exc}") from exc
    return JobRecord.from_map(data)
