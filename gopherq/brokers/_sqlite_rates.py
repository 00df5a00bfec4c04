"""The SQLite broker's rate limits (``BrokerAdmin.rate_admit`` and the rest but
``defer``, which moves messages and so lives with them in ``sqlite``).

Each call is one transaction. Tables::

    rate_buckets   rate limit key -> its theoretical arrival time (GCRA, gopherq.limits)
    rate_slots     (key, queue, id) -> slot: messages put back to wait for a slot
                   of bucket key, or for one of another bucket (rate_keep); rate_admit
                   does not charge them again
    rate_limits    task -> rate limit set at run time (rate NULL: none), burst, and
                   hold_until (the task is paused until then; NULL: not held; one
                   that ended is not read, and the periodic tidy deletes it)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from gopherq.brokers.base import RATE_SLOT_KEPT, BrokerAdmin, Delivery, rate_slot
from gopherq.limits import RateSetting
from gopherq.stores.sqlite import Database

RATE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rate_buckets (
        key TEXT PRIMARY KEY,
        tat REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS rate_slots (
        key TEXT NOT NULL,
        queue TEXT NOT NULL,
        id TEXT NOT NULL,
        slot REAL NOT NULL,
        PRIMARY KEY (key, queue, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS rate_slots_slot ON rate_slots (slot)",
    """CREATE TABLE IF NOT EXISTS rate_limits (
        task TEXT PRIMARY KEY,
        rate TEXT,
        burst INTEGER NOT NULL DEFAULT 1,
        hold_until REAL
    ) WITHOUT ROWID""",
)
"""The tables, for ``SQLiteBroker.SCHEMA``."""

_DROP_EMPTY_LIMIT = "DELETE FROM rate_limits WHERE task = ? AND rate IS NULL AND hold_until IS NULL"
_LIVE_LIMITS = """SELECT task, rate, burst, iif(hold_until > ?1, hold_until, NULL) FROM rate_limits
    WHERE rate IS NOT NULL OR hold_until > ?1"""


class SQLiteRates(BrokerAdmin):
    """Rate limits for ``SQLiteBroker``, which provides the database."""

    __slots__ = ()
    _db: Database

    def rate_admit(
        self, key: str, interval: float, burst: int, deliveries: Sequence[Delivery]
    ) -> list[float]:
        """Seconds until each delivery's slot of bucket ``key`` (0.0: now), claimed in order."""
        waits: list[float] = []
        with self._db.write() as conn:
            now = time.time()
            row = conn.execute("SELECT tat FROM rate_buckets WHERE key = ?", (key,)).fetchone()
            tat = row[0] if row else 0.0
            for delivery in deliveries:
                place = (key, delivery.queue, delivery.id)
                row = conn.execute(
                    "DELETE FROM rate_slots WHERE key = ? AND queue = ? AND id = ? RETURNING slot",
                    place,
                ).fetchone()
                slot, tat = rate_slot(row[0] if row else None, tat, now, interval, burst)
                if slot > now:
                    conn.execute("INSERT INTO rate_slots VALUES (?, ?, ?, ?)", (*place, slot))
                waits.append(max(slot - now, 0.0))
            conn.execute(
                """INSERT INTO rate_buckets VALUES (?, ?)
                ON CONFLICT DO UPDATE SET tat = excluded.tat""",
                (key, tat),
            )
        return waits

    def rate_keep(self, key: str, deliveries: Sequence[Delivery]) -> int:
        """Remember a slot due now of bucket ``key`` for each delivery (see ``BrokerAdmin``)."""
        with self._db.write() as conn:
            now = time.time()
            cursor = conn.executemany(
                "INSERT OR IGNORE INTO rate_slots VALUES (?, ?, ?, ?)",
                [(key, d.queue, d.id, now) for d in deliveries],
            )
            kept: int = cursor.rowcount
        return kept

    def rate_release(self, key: str) -> int:
        """Forget bucket ``key``; its messages waiting for a slot become ready at once, in
        their old place in line."""
        with self._db.write() as conn:
            conn.execute("DELETE FROM rate_buckets WHERE key = ?", (key,))
            moved: int = conn.execute(
                """UPDATE messages
                SET state = 'ready', run_at = coalesce(line_at, ?), line_at = NULL
                WHERE state = 'scheduled' AND id IN (
                    SELECT id FROM rate_slots WHERE key = ? AND queue = messages.queue)""",
                (time.time(), key),
            ).rowcount
            conn.execute("DELETE FROM rate_slots WHERE key = ?", (key,))
        return moved

    def rate_limits(self) -> dict[str, RateSetting]:
        """Run-time rate limits and holds by task, without holds that ended (the periodic
        tidy deletes them: ``tidy_rates``)."""
        with self._db.read() as conn:
            rows = conn.execute(_LIVE_LIMITS, (time.time(),))
            return {task: RateSetting(rate, burst, until) for task, rate, burst, until in rows}

    def set_rate_limit(self, task: str, rate: str | None, burst: int = 1) -> None:
        """Set or (``rate`` None) remove the run-time rate limit of ``task``."""
        with self._db.write() as conn:
            conn.execute(
                """INSERT INTO rate_limits (task, rate, burst) VALUES (?, ?, ?)
                ON CONFLICT DO UPDATE SET rate = excluded.rate, burst = excluded.burst""",
                (task, rate, burst),
            )
            conn.execute(_DROP_EMPTY_LIMIT, (task,))

    def hold_rate(self, task: str, seconds: float) -> float:
        """Hold ``task`` until ``seconds`` from now (or a later hold already set)."""
        with self._db.write() as conn:
            until: float = conn.execute(
                """INSERT INTO rate_limits (task, hold_until) VALUES (?1, ?2)
                ON CONFLICT DO UPDATE SET hold_until = max(coalesce(hold_until, ?2), ?2)
                RETURNING hold_until""",
                (task, time.time() + seconds),
            ).fetchone()[0]
        return until


def tidy_rates(conn: sqlite3.Connection, now: float) -> None:
    """Delete the slots past keeping and the holds that ended by ``now`` (with the rows
    they leave empty), in the caller's transaction: ``SQLiteBroker``'s periodic tidy."""
    conn.execute("DELETE FROM rate_slots WHERE slot < ?", (now - RATE_SLOT_KEPT,))
    conn.execute("DELETE FROM rate_limits WHERE hold_until <= ? AND rate IS NULL", (now,))
    conn.execute("UPDATE rate_limits SET hold_until = NULL WHERE hold_until <= ?", (now,))
