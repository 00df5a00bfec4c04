"""The SQLite broker's concurrency limits (``Broker.admit``): tables and statements.

Each function runs inside the caller's write transaction, so every step is atomic.

Tables::

    concurrency_holders   one row per delivery admitted under a key
      key, id, token      the limit key (the task name) and the delivery
      until               when its holder lease ends: past it, it no longer counts

    concurrency_parked    one row per message parked under a key, in line order
      key, id
      priority, run_at,   its place in the ready line (seq breaks ties, as in messages),
      seq                 given back when it is woken
      until               the run_at of its parking (the message is 'scheduled' until
                          then): a row whose message has another run_at or state left
                          its parking (woken at its end, cancelled, deleted) and is
                          dropped when met
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gopherq.brokers._sqlite_rows import HELD
from gopherq.brokers.base import Delivery

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS concurrency_holders (
        key TEXT NOT NULL,
        id TEXT NOT NULL,
        token TEXT NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (key, id, token)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS concurrency_holders_until ON concurrency_holders (key, until)",
    """CREATE TABLE IF NOT EXISTS concurrency_parked (
        key TEXT NOT NULL,
        id TEXT NOT NULL,
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        seq INTEGER NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (key, priority, run_at, seq)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS concurrency_parked_until ON concurrency_parked (key, until)",
)


def admit(
    conn: sqlite3.Connection, delivery: Delivery, key: str, limit: int, *, now: float, lease: float
) -> bool:
    """``Broker.admit`` in the caller's transaction (``now``: its time)."""
    place = conn.execute(
        f"SELECT priority, run_at, seq FROM messages WHERE {HELD}", (delivery.id, delivery.token)
    ).fetchone()
    if place is None:
        return False
    expired = conn.execute(
        "DELETE FROM concurrency_holders WHERE key = ? AND until <= ?", (key, now)
    ).rowcount
    count, mine = conn.execute(
        """SELECT count(*), coalesce(max(id = ? AND token = ?), 0)
        FROM concurrency_holders WHERE key = ?""",
        (delivery.id, delivery.token, key),
    ).fetchone()
    admitted = bool(mine) or count < limit
    until = now + lease
    if admitted:
        conn.execute(
            "INSERT OR REPLACE INTO concurrency_holders VALUES (?, ?, ?, ?)",
            (key, delivery.id, delivery.token, until),
        )
        count += 0 if mine else 1
    else:
        conn.execute(
            f"""UPDATE messages SET state = 'scheduled', run_at = ?, token = NULL,
                lease_until = NULL, deliveries = deliveries - 1
            WHERE {HELD}""",
            (until, delivery.id, delivery.token),
        )
        conn.execute(
            "INSERT OR REPLACE INTO concurrency_parked VALUES (?, ?, ?, ?, ?, ?)",
            (key, delivery.id, *place, until),
        )
    _wake(conn, key, min(expired, limit - count), now)
    return admitted


def release(conn: sqlite3.Connection, admitted: Sequence[tuple[str, Delivery]], now: float) -> int:
    """``Broker.release_admitted`` in the caller's transaction."""
    released = 0
    for key, delivery in admitted:
        if conn.execute(
            "DELETE FROM concurrency_holders WHERE key = ? AND id = ? AND token = ?",
            (key, delivery.id, delivery.token),
        ).rowcount:
            released += 1
            _wake(conn, key, 1, now)
    return released


def renew(conn: sqlite3.Connection, admitted: Sequence[tuple[str, Delivery]], until: float) -> int:
    """``Broker.renew_admitted`` in the caller's transaction: holder leases end at ``until``."""
    cursor = conn.executemany(
        "UPDATE concurrency_holders SET until = ? WHERE key = ? AND id = ? AND token = ?",
        [(until, key, d.id, d.token) for key, d in admitted],
    )
    return cursor.rowcount


def _wake(conn: sqlite3.Connection, key: str, count: int, now: float) -> None:
    """Make up to ``count`` messages parked under ``key`` ready in their old place."""
    if count <= 0:
        return
    # Parkings that ended are over: their messages are due (or gone) already.
    conn.execute("DELETE FROM concurrency_parked WHERE key = ? AND until <= ?", (key, now))
    woken = 0
    while woken < count:
        rows = conn.execute(
            """SELECT id, priority, run_at, seq, until FROM concurrency_parked WHERE key = ?
            ORDER BY priority, run_at, seq LIMIT ?""",
            (key, count - woken),
        ).fetchall()
        if not rows:
            return
        for id, priority, run_at, seq, until in rows:
            conn.execute(
                """DELETE FROM concurrency_parked
                WHERE key = ? AND priority = ? AND run_at = ? AND seq = ?""",
                (key, priority, run_at, seq),
            )
            woken += conn.execute(
                """UPDATE messages SET state = 'ready', run_at = ?
                WHERE id = ? AND state = 'scheduled' AND run_at = ?""",
                (run_at, id, until),
            ).rowcount
