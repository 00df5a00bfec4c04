"""Fair keys of the SQLite broker: where an enqueue puts a keyed message in line.

Within a queue and priority, line order is ``run_at``. A message made ready with
a fair key gets ``run_at = max(next[key], head)`` (gopherq.brokers.base, "Fair
keys"), ``head`` being the ``run_at`` of the first ready message of its queue and
priority (now when there is none), and its key's counter moves one ``STEP``
behind it. The counters live in the ``fair_keys`` table, changed in the
enqueue's transaction. The first keyed message of a queue and priority in a
transaction drops the counters the head passed (all of them when the line is
empty), so the table holds about the keys with ready messages.
"""

from __future__ import annotations

import math
import sqlite3

from gopherq.brokers import _sqlite_rows as rowcheck

STEP = 1e-5
"""Seconds between two messages of one key in line (10 us, the Redis broker's unit)."""

SCHEMA = (
    #   fair_keys      per queue, priority and fair key: the run_at its next message
    #                  takes at the least
    """CREATE TABLE IF NOT EXISTS fair_keys (
        queue TEXT NOT NULL,
        priority INTEGER NOT NULL,
        key TEXT NOT NULL,
        next REAL NOT NULL,
        PRIMARY KEY (queue, priority, key)
    ) WITHOUT ROWID""",
    # dropping the counters the head passed: a range of this index
    "CREATE INDEX IF NOT EXISTS fair_keys_next ON fair_keys (queue, priority, next)",
)

_HEAD = """SELECT min(run_at) FROM messages
    WHERE state = 'ready' AND queue = ? AND priority = ?"""
_PASSED = "DELETE FROM fair_keys WHERE queue = ? AND priority = ? AND next <= ?"
_NEXT = "SELECT next FROM fair_keys WHERE queue = ? AND priority = ? AND key = ?"
_STORE = """INSERT INTO fair_keys (queue, priority, key, next) VALUES (?, ?, ?, ?)
    ON CONFLICT DO UPDATE SET next = excluded.next"""


class FairPlaces:
    """The places of one enqueue transaction's keyed messages: ``place`` each, ``take``
    those stored, then ``store`` the counters."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self._conn = conn
        self._now = now
        self._heads: dict[tuple[str, int], float] = {}
        self._next: dict[tuple[str, int, str], float] = {}

    def place(self, queue: str, priority: int, key: str) -> float:
        """The ``run_at`` of a message of ``key`` made ready now."""
        head = self._heads.get((queue, priority))
        if head is None:
            first = self._conn.execute(_HEAD, (queue, priority)).fetchone()[0]
            # A run_at of another type (a row written by others) counts as none.
            head = rowcheck.time_or(first, math.inf)
            self._conn.execute(_PASSED, (queue, priority, head))  # all, if no head
            if head == math.inf:
                head = self._now
            self._heads[queue, priority] = head
        next_ = self._next.get((queue, priority, key))
        if next_ is None:
            row = self._conn.execute(_NEXT, (queue, priority, key)).fetchone()
            next_ = rowcheck.time_or(row[0], head) if row else head
        return max(next_, head)

    def take(self, queue: str, priority: int, key: str, run_at: float) -> None:
        """Count a message of ``key`` stored at ``run_at``."""
        self._next[queue, priority, key] = run_at + STEP

    def store(self) -> None:
        """Write the counters that changed."""
        if self._next:
            self._conn.executemany(
                _STORE, [(q, p, k, next_) for (q, p, k), next_ in self._next.items()]
            )
