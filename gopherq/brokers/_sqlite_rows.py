"""Rows of the SQLite broker's ``messages`` table as ``reserve`` leases and reads them
(``lease_sql``, ``RETURNED``; ``HELD``, a delivery's row), including rows that another
program wrote there directly, with values of the wrong type or range.

None of those may stop a reserve or block the queue, and each must end run or
dead-lettered with a reason. The checks cost the common case almost nothing:

* ``delivery`` checks the types of each row it turns into a ``Delivery`` and
  raises ``Malformed`` at the first odd one; ``repair`` then handles the batch:
  a row whose id is not text is dead-lettered (a delivery could not name it),
  a count (``attempt``, ``deliveries``) that is not an integer from 0 to
  ``MAX_COUNT`` is reset in the row, a priority that is not an integer reads as
  ``MAX_COUNT`` (SQLite already orders it last), and a body of another type is
  handed out as bytes (the worker dead-letters it ``DECODE_ERROR`` if it does
  not decode).
* ``line_order`` sorts a batch; ``lenient_line_order`` when a priority or run
  time of another type made that fail.
* ``drop_undecodable_ids``: an id that is text but not UTF-8 cannot even be read
  by Python; the batch is read again with ids as bytes.
* ``sweep``: rows no reserve would reach (an unknown state, a scheduled or
  leased row whose time is not a number, a dead one without a numeric time of
  death) are found by a window of ``SWEEP_ROWS`` rows moved along the table at
  each recovery tick, and dead-lettered ``DECODE_ERROR`` with their values in
  the error. No index serves it: one would cost every reserve (SQLite checks a
  partial index's condition on each change of the columns it names).
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from gopherq.brokers.base import Delivery

MAX_COUNT = 2**31 - 1
"""Largest attempt or delivery count a reserve hands out; larger ones are reset to it."""
SWEEP_ROWS = 1000
"""Rows one recovery tick looks at for stray ones (a fraction of a millisecond)."""

_DEAD_LETTER = """UPDATE messages SET state = 'dead', reason = 'DECODE_ERROR', error = ?,
    died = ?, token = NULL, lease_until = NULL, cancelled = 0 WHERE seq = ?"""

# A row no reserve, promotion or recovery reaches. A dead letter keeps its reason and
# error and gets a time of death; any other is dead-lettered with its values in the error.
_SWEEP = """UPDATE messages SET
        reason = iif(state = 'dead', reason, 'DECODE_ERROR'),
        error = iif(state = 'dead', error, printf(
            'malformed broker row: state %s, run_at %s, lease_until %s',
            quote(state), quote(run_at), quote(lease_until))),
        state = 'dead', died = ?1, token = NULL, lease_until = NULL, cancelled = 0
    WHERE seq BETWEEN ?2 AND ?3 AND (
        state NOT IN ('ready', 'scheduled', 'leased', 'dead')
        OR (state = 'scheduled' AND typeof(run_at) != 'real')
        OR (state = 'leased' AND typeof(lease_until) != 'real')
        OR (state = 'dead' AND typeof(died) != 'real'))"""

RETURNED = "id, queue, priority, body, attempt, deliveries, token, run_at, seq, cancelled"
"""What reserve reads of each leased row, in the order ``delivery`` takes it."""
HELD = "id = ? AND token = ? AND state = 'leased'"
"""The row of a delivery still leased under its token (parameters: id, token)."""


def lease_sql(seqs: str) -> str:
    """The statement of every reserve (plain or ordered): lease the rows whose seq the
    subquery ``seqs`` selects and return them (``RETURNED``). Parameters: ?1
    lease_until, then those of ``seqs``. A key held until the start (``key_hold`` -1,
    ``unique_until="start"``) is freed here."""
    return f"""UPDATE messages SET state = 'leased', token = lower(hex(randomblob(8))),
            lease_until = ?1, deliveries = deliveries + 1, key = iif(key_hold < 0, NULL, key)
        WHERE seq IN ({seqs})
        RETURNING {RETURNED}"""


class Malformed(Exception):
    """A row of a batch has a value of the wrong type or range: see ``repair``."""


def delivery(row: tuple[Any, ...]) -> Delivery:
    """A row as a ``Delivery``; ``Malformed`` if a value is of the wrong type or range."""
    id, queue, priority, body, attempt, deliveries, token, _, _, cancelled = row
    if (
        type(id) is not str
        or type(body) is not bytes
        or type(priority) is not int
        or type(attempt) is not int
        or type(deliveries) is not int
        or not 0 <= attempt <= MAX_COUNT
        or not 0 < deliveries <= MAX_COUNT
    ):
        raise Malformed
    return Delivery(id, queue, priority, body, attempt, deliveries, token, cancelled == 1)


def repair(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], now: float) -> list[Delivery]:
    """The deliveries of a batch with malformed rows (see the module docstring), in its
    order: rows whose id is not text are dead-lettered, bad counts reset in the row."""
    out: list[Delivery] = []
    for row in rows:
        id, queue, priority, body, attempt, deliveries, token, _, seq, cancelled = row
        if type(id) is not str:
            conn.execute(_DEAD_LETTER, (f"malformed broker row: id {id!r} is not text", now, seq))
            continue
        good_attempt = count_or(attempt, 0)
        good_deliveries = count_or(deliveries, 1) or 1
        if (good_attempt, good_deliveries) != (attempt, deliveries):
            conn.execute(
                "UPDATE messages SET attempt = ?, deliveries = ? WHERE seq = ?",
                (good_attempt, good_deliveries, seq),
            )
        if type(body) is not bytes:
            body = str(body).encode("utf-8", "surrogateescape")
        if type(priority) is not int:
            priority = MAX_COUNT
        out.append(
            Delivery(
                id, queue, priority, body, good_attempt, good_deliveries, token, cancelled == 1
            )
        )
    return out


def line_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sort key of a batch: priority, then run time, then insertion order."""
    return row[2], row[7], row[8]


def lenient_line_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``line_order`` where a priority or run time that is not a number comes last."""
    priority, run_at = row[2], row[7]
    return (
        priority if _is_number(priority) else float("inf"),
        run_at if _is_number(run_at) else float("inf"),
        row[8],
    )


def drop_undecodable_ids(
    conn: sqlite3.Connection, lease_until: float, now: float
) -> list[tuple[Any, ...]]:
    """The rows a reserve statement just leased, one of whose ids is text that is not
    UTF-8 so that Python could not read the batch: those are dead-lettered with their id
    turned into a blob (which reads back), the others returned.

    The statement made its changes before its rows were read (SQLite runs an ``UPDATE
    ... RETURNING`` whole at its first step): its rows are the leased ones with its lease
    time.
    """
    leased = "FROM messages WHERE state = 'leased' AND lease_until = ?"
    ids = conn.execute(f"SELECT seq, CAST(id AS BLOB) {leased}", (lease_until,)).fetchall()
    bad = [seq for seq, raw in ids if not _is_utf8(raw)]
    error = "malformed broker row: its id is not UTF-8 text"
    conn.executemany(_DEAD_LETTER, [(error, now, seq) for seq in bad])
    # OR IGNORE: should another row have that blob as its id, this one keeps its text
    # (rare beyond belief; purge_dead removes it).
    conn.executemany(
        "UPDATE OR IGNORE messages SET id = CAST(id AS BLOB) WHERE seq = ?", [(s,) for s in bad]
    )
    return conn.execute(f"SELECT {RETURNED} {leased}", (lease_until,)).fetchall()


def sweep(conn: sqlite3.Connection, start: int, now: float) -> int:
    """Dead-letter stray rows among the ``SWEEP_ROWS`` from seq ``start``; returns the seq
    where the next window starts (0 after the end of the table)."""
    end, count = conn.execute(
        """SELECT max(seq), count(*) FROM
            (SELECT seq FROM messages WHERE seq >= ? ORDER BY seq LIMIT ?)""",
        (start, SWEEP_ROWS),
    ).fetchone()
    if count:
        conn.execute(_SWEEP, (now, start, end))
    return end + 1 if count == SWEEP_ROWS else 0


def time_or(value: object, default: float) -> float:
    """``value`` as a time if it is a number, else ``default``."""
    return float(value) if isinstance(value, int | float) else default


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def count_or(value: object, default: int) -> int:
    """``value`` within 0..MAX_COUNT if it is a number (SQLite turns an integer sum that
    overflows into a float), else ``default``."""
    if type(value) is float and math.isfinite(value):
        value = int(value)
    return min(max(value, 0), MAX_COUNT) if type(value) is int else default


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True
