"""SQLite broker: the embedded default. Durable, zero set-up, one file.

Many producer and worker processes on one machine share one database file.

Supports the whole broker contract: batch enqueue in one transaction, delayed
messages (``eta``), strict priority with FIFO within a priority across several
queues, leases with per-delivery tokens and renewal, idempotency keys (per queue;
held past the ack for ``key_ttl``, or freed at reserve), rate limits
(``_sqlite_rates``; ``defer`` puts a message back in its old place in line),
cancellation (a leased message carries its cancel mark through requeue, lease
expiry and retry), fair keys (see ``_sqlite_fair``), pause and resume, dead
letters with a time to live, and a blocking ``reserve`` that sleeps on a change
notification (inotify on the ``-wal`` file, see ``gopherq.stores.sqlite``) and
wakes within about a millisecond of a commit by any process, or at the next due
``eta`` or lease expiry. Where inotify is missing it polls (5 ms to 100 ms).

URL: ``sqlite:///`` followed by the path of the database file, relative to the
working directory (``sqlite:///./gopherq.db``, ``sqlite:///data/q.db``) or
absolute (``sqlite:////var/lib/gopherq/q.db``); ``~`` is expanded. The
directory must exist; the file and its tables are created on first use.

Options:
    lease_seconds (float): how long ``reserve`` leases a message. Default 30.
    dead_letter_ttl (float): seconds a dead letter is kept. Default 7 days.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A commit
is in the WAL file, in the operating system's page cache, when ``enqueue`` or
``ack`` returns, so ``kill -9`` of any process (producer, worker, anyone in the
middle of a transaction) loses nothing and never corrupts the file. An operating
system crash or power loss may roll back the last transactions committed before
it (they were not yet fsynced at a checkpoint) but never corrupts the file:
messages enqueued just before may be gone, and messages acked just before may
run again. ``synchronous=FULL`` would fsync every commit: about 1,000 commits a
second on a typical virtual disk, against some 20,000 single enqueues a second.

Concurrency: every write is one ``BEGIN IMMEDIATE`` transaction (writers queue
on SQLite's lock, waiting up to ``BUSY_TIMEOUT``); readers never block. Each
process and thread opens its own connection lazily and never uses one across
``fork``: the thread that forks closes its connections first, and a child
leaves inherited ones untouched.

Concurrency limits (``admit``): each step one transaction, on the tables of
``_sqlite_limits``.

Time: leases and etas use this machine's ``time.time()``; every process using
the file runs on the same machine, so they share one clock.

Rows written by others: a program that writes the ``messages`` table directly
(not through this broker) may leave values of the wrong type or range. None of
them stops a reserve or blocks the queue, and each such message ends run or
dead-lettered ``DECODE_ERROR`` with a reason: see ``_sqlite_rows``. Their
changes are counted all the same: triggers keep the counts that ``stats`` reads
(except a row replaced by ``INSERT OR REPLACE``, which SQLite deletes without its
delete trigger unless that connection enabled ``recursive_triggers``).
"""

from __future__ import annotations

import functools
import math
import sqlite3
import time
from collections.abc import Callable, Container, Sequence
from typing import Any

from gopherq.brokers import _sqlite_fair as fair
from gopherq.brokers import _sqlite_limits as limits
from gopherq.brokers import _sqlite_order as ordering
from gopherq.brokers import _sqlite_rows as rowcheck
from gopherq.brokers._sqlite_rates import RATE_SCHEMA, SQLiteRates, tidy_rates
from gopherq.brokers.base import (
    Broker,
    Cancellation,
    DeadLetter,
    Delivery,
    Envelope,
    Peeked,
    QueueDepth,
    QueueStats,
    ReserveOrder,
)
from gopherq.errors import BrokerUnavailable
from gopherq.states import State
from gopherq.stores.sqlite import Database, Derived, sqlite_path

# How often reserve looks for expired leases and old dead letters, per process.
RECOVER_EVERY = 1.0
# Shortest sleep in a blocking reserve, so a due time that is just passing cannot spin.
MIN_SLEEP = 0.001
# Ids per statement of cancel, cancel_requested and settle_held (well below SQLite's
# 32,766 variables).
IDS_PER_STATEMENT = 500

_LOCATED = {
    "ready": State.QUEUED,
    "scheduled": State.SCHEDULED,
    "leased": State.STARTED,
    "dead": State.DEAD,
}

# The statements of the triggers that keep message_counts: a message adds 1 to the column
# of its state (to none for a state, written by others, that is none of these).
_STATES = ("ready", "scheduled", "leased", "dead")
_COUNT_NEW = f"""INSERT INTO message_counts (queue, priority, {", ".join(_STATES)})
    VALUES (new.queue, new.priority, {", ".join(f"new.state = '{s}'" for s in _STATES)})
    ON CONFLICT DO UPDATE SET {", ".join(f"{s} = {s} + excluded.{s}" for s in _STATES)}"""
_UNCOUNT_OLD = f"""UPDATE message_counts
    SET {", ".join(f"{s} = {s} - (old.state = '{s}')" for s in _STATES)}
    WHERE queue = old.queue AND priority = old.priority"""
_RECOUNT = f"""UPDATE message_counts
    SET {", ".join(f"{s} = {s} + (new.state = '{s}') - (old.state = '{s}')" for s in _STATES)}
    WHERE queue = new.queue AND priority = new.priority"""


class SQLiteBroker(SQLiteRates, Broker):
    """A broker in one SQLite file shared by the processes of one machine.

    See the module docstring.
    """

    # Tables. One row per message, wherever it is; the state column says where:
    #
    #   messages
    #     seq          INTEGER PRIMARY KEY  insertion order; breaks ties in line
    #     id           task id, unique
    #     queue, priority
    #     state        'ready' | 'scheduled' | 'leased' | 'dead'
    #     run_at       when it became runnable: its eta, else the enqueue time;
    #                  orders messages within a priority (kept by requeue and
    #                  lease expiry, so the message keeps its place in line)
    #     attempt      executions before this one that ended in a retry
    #     deliveries   times this attempt was reserved
    #     token        random per delivery while leased, else NULL
    #     lease_until  while leased: when the lease expires
    #     key          idempotency key, unique within its queue among messages that
    #                  are not dead (a dead letter keeps it, to take it again when
    #                  requeued, but does not hold it)
    #     key_hold     NULL: the key is freed when the message is acked; seconds > 0:
    #                  held that long after the ack (``finished_keys``); -1: freed
    #                  when the message is reserved (the key goes NULL)
    #     reason, error, died   while dead: why, the error text, and when
    #     cancelled    1 once a cancel was requested while it was leased: kept by
    #                  requeue, lease expiry and retry, cleared when it dies
    #     line_at      while scheduled by ``defer``: its run_at before, its place in
    #                  line again when it is due (files from before get it after
    #                  the body, see ``ADDED``)
    #     body         the encoded message, last, so that reading any other
    #                  column never walks the body's overflow pages (files from
    #                  before ``cancelled`` get it after the body, see ``ADDED``;
    #                  only reserve and cancel read it from the table, and they
    #                  read the body anyway)
    #
    #   queues         every queue seen by enqueue or pause, and its paused flag
    #
    #   rate_buckets, rate_slots, rate_limits: see ``_sqlite_rates``
    #   finished_keys  keys held past their message's ack: (queue, key), the id
    #                  that enqueue answers with, and until when (unix seconds);
    #                  written by the ack's transaction
    #
    #   message_counts how many messages of each (queue, priority) are in each state,
    #                  kept by triggers on ``messages`` in the transaction of every
    #                  change (whoever makes it), so that ``stats`` and
    #                  ``queue_depths`` read a row per queue and priority however
    #                  many messages wait; a row whose counts fall to 0 stays
    #
    # The index of each state is partial: it holds only the rows it serves, and
    # carries the queue.
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS messages (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            queue TEXT NOT NULL,
            priority INTEGER NOT NULL,
            state TEXT NOT NULL,
            run_at REAL NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            deliveries INTEGER NOT NULL DEFAULT 0,
            token TEXT,
            lease_until REAL,
            key TEXT,
            reason TEXT,
            error TEXT,
            died REAL,
            cancelled INTEGER NOT NULL DEFAULT 0,
            line_at REAL,
            key_hold REAL,
            body BLOB NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS queues (
            name TEXT PRIMARY KEY,
            paused INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX IF NOT EXISTS messages_id ON messages (id)",
        # reserve: an index range scan per queue, already in line order
        """CREATE INDEX IF NOT EXISTS messages_ready
            ON messages (queue, priority, run_at) WHERE state = 'ready'""",
        # promotion of due etas, and the next eta a blocked reserve sleeps until,
        # per queue (so that a million delayed messages elsewhere cost nothing)
        """CREATE INDEX IF NOT EXISTS messages_scheduled
            ON messages (queue, run_at) WHERE state = 'scheduled'""",
        # recovery of expired leases
        """CREATE INDEX IF NOT EXISTS messages_leased
            ON messages (lease_until, queue) WHERE state = 'leased'""",
        # dead letters newest first, and their time to live
        """CREATE INDEX IF NOT EXISTS messages_dead
            ON messages (died, queue) WHERE state = 'dead'""",
        """CREATE UNIQUE INDEX IF NOT EXISTS messages_queue_key
            ON messages (queue, key) WHERE key IS NOT NULL AND state != 'dead'""",
        # cancel_requested reads this (few rows: the marked ones) and never the table
        """CREATE INDEX IF NOT EXISTS messages_cancelled
            ON messages (id) WHERE cancelled = 1""",
        # the types of messages' columns, so that a row written by others with a value of
        # another type is counted under the value that messages holds
        """CREATE TABLE IF NOT EXISTS message_counts (
            queue TEXT NOT NULL,
            priority INTEGER NOT NULL,
            ready INTEGER NOT NULL,
            scheduled INTEGER NOT NULL,
            leased INTEGER NOT NULL,
            dead INTEGER NOT NULL,
            PRIMARY KEY (queue, priority)
        ) WITHOUT ROWID""",
        f"""CREATE TRIGGER IF NOT EXISTS messages_count_insert AFTER INSERT ON messages
        BEGIN {_COUNT_NEW}; END""",
        f"""CREATE TRIGGER IF NOT EXISTS messages_count_delete AFTER DELETE ON messages
        BEGIN {_UNCOUNT_OLD}; END""",
        # Only statements that set the column fire these (not renew, nor cancel's mark).
        # A change of state within the message's queue and priority (every move that the
        # broker makes): one update of one row.
        f"""CREATE TRIGGER IF NOT EXISTS messages_count_update AFTER UPDATE OF state ON messages
            WHEN new.state IS NOT old.state
                AND new.queue IS old.queue AND new.priority IS old.priority
        BEGIN {_RECOUNT}; END""",
        # A message moved to another queue or priority (only others' programs do that).
        f"""CREATE TRIGGER IF NOT EXISTS messages_count_move
            AFTER UPDATE OF queue, priority ON messages
            WHEN new.queue IS NOT old.queue OR new.priority IS NOT old.priority
        BEGIN {_UNCOUNT_OLD}; {_COUNT_NEW}; END""",
        *limits.SCHEMA,  # concurrency limits: see _sqlite_limits
        *RATE_SCHEMA,
        """CREATE TABLE IF NOT EXISTS finished_keys (
            queue TEXT NOT NULL,
            key TEXT NOT NULL,
            id TEXT NOT NULL,
            until REAL NOT NULL,
            PRIMARY KEY (queue, key)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS finished_keys_until ON finished_keys (until)",
        # the messages an ack looks up to keep their keys: few, and none when unused
        """CREATE INDEX IF NOT EXISTS messages_key_hold
            ON messages (id) WHERE key_hold > 0""",
        *fair.SCHEMA,
    )
    # Files from before message_counts get it filled in the transaction that creates it;
    # so does a file that lost one of its triggers (its counts may be wrong).
    DERIVED = (
        Derived(
            frozenset(
                {
                    "message_counts",
                    "messages_count_insert",
                    "messages_count_delete",
                    "messages_count_update",
                    "messages_count_move",
                }
            ),
            (
                "DELETE FROM message_counts",
                f"""INSERT INTO message_counts (queue, priority, {", ".join(_STATES)})
                SELECT queue, priority, {", ".join(f"sum(state = '{s}')" for s in _STATES)}
                FROM messages GROUP BY queue, priority""",
            ),
        ),
    )
    # Columns added since the first release, for files created before (see Database).
    ADDED = (
        ("messages", "cancelled", "INTEGER NOT NULL DEFAULT 0"),
        ("messages", "line_at", "REAL"),
        ("messages", "key_hold", "REAL"),
    )
    # Indexes of earlier releases, dropped from files created before: ``messages_key``
    # held a key across every queue and while dead (``messages_queue_key`` replaces it).
    DROPPED = ("messages_key",)

    _INSERT = """INSERT INTO messages (id, queue, priority, state, run_at, key, body)
        VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"""
    _INSERT_KEYED = """INSERT INTO messages (id, queue, priority, state, run_at, key, body,
        key_hold) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"""
    _PROMOTE = """UPDATE messages SET state = 'ready', run_at = coalesce(line_at, run_at),
        line_at = NULL
        WHERE state = 'scheduled' AND queue IN ({}) AND run_at <= ?"""
    _RECOVER = """UPDATE messages SET state = 'ready', token = NULL, lease_until = NULL
        WHERE state = 'leased' AND lease_until <= ?"""
    _EXPIRE_DEAD = "DELETE FROM messages WHERE state = 'dead' AND died <= ?"
    _ACK = f"DELETE FROM messages WHERE {rowcheck.HELD}"
    _KEEP_KEY = "INSERT OR REPLACE INTO finished_keys (queue, key, id, until) VALUES (?, ?, ?, ?)"
    _ANY_KEY_HOLD = "SELECT 1 FROM messages INDEXED BY messages_key_hold WHERE key_hold > 0 LIMIT 1"
    _RENEW = f"UPDATE messages SET lease_until = ? WHERE {rowcheck.HELD}"
    _KEY_HOLDER = """SELECT id FROM messages
        WHERE queue = ? AND key = ? AND state != 'dead'"""
    # The live holder of a key first, else the finished one whose key is held still.
    _HOLDER = f"""{_KEY_HOLDER} UNION ALL
        SELECT id FROM finished_keys WHERE queue = ? AND key = ? AND until > ? LIMIT 1"""
    _EXPIRE_KEYS = "DELETE FROM finished_keys WHERE until <= ?"

    def __init__(
        self,
        url: str = "sqlite:///./gopherq.db",
        *,
        lease_seconds: float = 30.0,
        dead_letter_ttl: float = 7 * 86400.0,
    ) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.lease_seconds = lease_seconds
        self.dead_letter_ttl = dead_letter_ttl
        self._db = Database(self.path, self.SCHEMA, self.ADDED, self.DROPPED, self.DERIVED)
        self._next_recover = 0.0
        self._sweep_from = 0  # seq where the recovery tick next looks for stray rows
        self._known_queues: set[str] = set()
        self._last_died = 0.0

    def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        """Store messages; a live idempotency key or an id already stored stores nothing."""
        if not envelopes:
            return []
        new_queues = {env.queue for env in envelopes} - self._known_queues
        with self._db.write() as conn:
            now = time.time()
            rows = [
                (env.id, env.queue, env.priority, "scheduled", env.eta, env.key, env.body)
                if env.eta is not None and env.eta > now
                else (env.id, env.queue, env.priority, "ready", now, env.key, env.body)
                for env in envelopes
            ]
            if new_queues:
                conn.executemany(
                    "INSERT OR IGNORE INTO queues (name) VALUES (?)", [(q,) for q in new_queues]
                )
            if all(env.key is None and env.fair_key is None for env in envelopes):
                conn.executemany(self._INSERT, rows)
                ids = [env.id for env in envelopes]
            else:
                ids = []
                places = fair.FairPlaces(conn, now)
                for env, row in zip(envelopes, rows, strict=True):
                    held = None
                    if env.key is not None:
                        where = (env.queue, env.key)
                        held = conn.execute(self._HOLDER, (*where, *where, now)).fetchone()
                    if held is None:
                        fair_key = env.fair_key if row[3] == "ready" else None
                        if fair_key is not None:  # its place in line by its fair key
                            run_at = places.place(env.queue, env.priority, fair_key)
                            row = (*row[:4], run_at, *row[5:])  # noqa: PLW2901
                        if env.key is None:
                            stored = conn.execute(self._INSERT, row).rowcount
                        else:
                            keyed = (*row, _key_hold(env))
                            stored = conn.execute(self._INSERT_KEYED, keyed).rowcount
                        if stored and fair_key is not None:
                            places.take(env.queue, env.priority, fair_key, row[4])
                    ids.append(env.id if held is None else held[0])
                places.store()
        self._known_queues |= new_queues
        return ids

    def reserve(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Lease up to ``limit`` messages, sleeping until one is runnable or ``timeout``."""
        return self._reserve(queues, limit, timeout, None)

    def reserve_ordered(
        self, queues: Sequence[str], limit: int, timeout: float, order: ReserveOrder
    ) -> list[Delivery]:
        """``reserve`` in ``order``: one statement as well (see ``_sqlite_order``)."""
        return self._reserve(queues, limit, timeout, order)

    def _reserve(
        self, queues: Sequence[str], limit: int, timeout: float, order: ReserveOrder | None
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        wanted = list(dict.fromkeys(queues))
        deadline = time.monotonic() + timeout
        waiter = self._db.waiter() if timeout > 0 else None
        if waiter is not None:
            waiter.reset()  # changes before this point are seen by the first attempt
        taken, due = self._reserve_once(wanted, limit, order)
        while not taken and waiter is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            waiter.wait(min(remaining, max(due - time.time(), MIN_SLEEP)))
            # Every commit wakes every blocked reserve: look without the write lock
            # first, so that idle workers do not queue on it for nothing.
            due = self._peek(wanted)
            if due <= time.time():
                taken, due = self._reserve_once(wanted, limit, order)
        return taken

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Forget finished messages; returns how many were still held."""
        if not deliveries:
            return 0
        with self._db.write() as conn:
            return self._ack(conn, [(d.id, d.token) for d in deliveries])

    def retry(self, delivery: Delivery, countdown: float, error: str) -> bool:
        """Schedule the message ``countdown`` seconds from now (at the back of the line)
        with ``attempt + 1``."""
        with self._db.write() as conn:
            now = time.time()
            state = "scheduled" if countdown > 0 else "ready"
            return bool(
                conn.execute(
                    f"""UPDATE messages SET state = ?, run_at = ?, attempt = attempt + 1,
                        deliveries = 0, token = NULL, lease_until = NULL, error = ?
                    WHERE {rowcheck.HELD}""",
                    (state, now + max(countdown, 0.0), error, delivery.id, delivery.token),
                ).rowcount
            )

    def dead(self, delivery: Delivery, reason: str, error: str) -> bool:
        """Move the message to its queue's dead letters; False if the lease was lost."""
        with self._db.write() as conn:
            # Strictly increasing within this process, so "newest first" is exact.
            self._last_died = died = max(time.time(), self._last_died + 1e-6)
            return bool(
                conn.execute(
                    f"""UPDATE messages SET state = 'dead', reason = ?, error = ?, died = ?,
                        token = NULL, lease_until = NULL, cancelled = 0
                    WHERE {rowcheck.HELD}""",
                    (reason, error, died, delivery.id, delivery.token),
                ).rowcount
            )

    def extend(self, deliveries: Sequence[Delivery]) -> int:
        """Renew leases for ``lease_seconds`` from now; returns how many were still held."""
        if not deliveries:
            return 0
        with self._db.write() as conn:
            until = time.time() + self.lease_seconds
            return conn.executemany(
                self._RENEW,
                [(until, d.id, d.token) for d in deliveries],
            ).rowcount

    def held(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids still leased under their token, whose leases are renewed (one
        transaction)."""
        return self.settle_held(deliveries, (), _write_nothing)

    def settle_held(
        self,
        deliveries: Sequence[Delivery],
        acks: Container[str],
        write: Callable[[sqlite3.Connection, set[str]], None],
    ) -> set[str]:
        """In one transaction: ack the ``deliveries`` still held whose id is in ``acks``,
        renew the leases of the other held ones, and ``write(conn, held ids)`` (the
        caller's statements: the result store's records in this file).

        Returns the held ids. What ``write`` does commits only with the settle: a
        record is never stored for a delivery whose lease was lost.
        """
        if not deliveries:
            return set()
        try:  # first as if every one were held (the common case): the statements of ack
            return self._settle_held(deliveries, acks, write, None)
        except _NotAllHeld:  # rolled back: again, checking each token first
            return self._settle_held(deliveries, acks, write, set())

    def _settle_held(
        self,
        deliveries: Sequence[Delivery],
        acks: Container[str],
        write: Callable[[sqlite3.Connection, set[str]], None],
        held: set[str] | None,
    ) -> set[str]:
        """``settle_held`` assuming every delivery held (``held`` None; raises
        ``_NotAllHeld`` if one is not), or reading which are first."""
        with self._db.write() as conn:
            if held is not None:
                held.update(self._holding(conn, deliveries))
            done = [(d.id, d.token) for d in deliveries if d.id in acks and _in(held, d.id)]
            until = time.time() + self.lease_seconds
            kept = [
                (until, d.id, d.token) for d in deliveries if d.id not in acks and _in(held, d.id)
            ]
            changed = 0
            if done:
                changed += self._ack(conn, done)
            if kept:
                changed += conn.executemany(self._RENEW, kept).rowcount
            if held is None:
                if changed < len(deliveries):
                    raise _NotAllHeld
                held = {d.id for d in deliveries}
            write(conn, held)
        return held

    def _ack(self, conn: sqlite3.Connection, held: list[tuple[str, str]]) -> int:
        """Delete the messages leased under these (id, token) pairs; returns how many.

        First, in the caller's transaction, a message among them that holds its key
        for a time (``key_hold``, not cancelled) leaves it in ``finished_keys``. When
        no message holds its key so (keys unused, or freed at the ack), that costs one
        look at the empty index ``messages_key_hold``.
        """
        if conn.execute(self._ANY_KEY_HOLD).fetchone() is None:
            return conn.executemany(self._ACK, held).rowcount
        tokens = dict(held)
        keep: list[tuple[str, str, str, float]] = []
        now = time.time()
        for start in range(0, len(held), IDS_PER_STATEMENT):
            chunk = [id for id, _ in held[start : start + IDS_PER_STATEMENT]]
            for id, token, queue, key, hold in conn.execute(_keyed_sql(len(chunk)), chunk):
                if tokens[id] == token:
                    keep.append((queue, key, id, now + hold))
        if keep:
            conn.executemany(self._KEEP_KEY, keep)
        return conn.executemany(self._ACK, held).rowcount

    def _holding(self, conn: sqlite3.Connection, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids of ``deliveries`` leased under their token (read in the caller's
        transaction)."""
        tokens: dict[str, str] = {}
        ids = [d.id for d in deliveries]
        for start in range(0, len(ids), IDS_PER_STATEMENT):
            chunk = ids[start : start + IDS_PER_STATEMENT]
            tokens.update(
                conn.execute(
                    f"""SELECT id, token FROM messages
                    WHERE state = 'leased' AND id IN ({", ".join("?" * len(chunk))})""",
                    chunk,
                ).fetchall()
            )
        return {d.id for d in deliveries if tokens.get(d.id) == d.token}

    def requeue(self, deliveries: Sequence[Delivery], *, started: bool = False) -> int:
        """Give messages back to their place in line; ``started=False`` uncounts the delivery."""
        if not deliveries:
            return 0
        uncount = 0 if started else 1
        with self._db.write() as conn:
            return conn.executemany(
                f"""UPDATE messages SET state = 'ready', token = NULL, lease_until = NULL,
                    deliveries = deliveries - ?
                WHERE {rowcheck.HELD}""",
                [(uncount, d.id, d.token) for d in deliveries],
            ).rowcount

    def recover(self) -> int:
        """Make expired leases and due scheduled messages ready; returns how many moved."""
        with self._db.write() as conn:
            return self._tidy(conn, time.time())

    def admit(self, delivery: Delivery, key: str, limit: int) -> bool:
        """Make ``delivery`` a holder of ``key`` if fewer than ``limit`` hold it, else
        park its message (see ``BrokerAdmin.admit``): one transaction."""
        with self._db.write() as conn:
            return limits.admit(
                conn, delivery, key, limit, now=time.time(), lease=self.lease_seconds
            )

    def release_admitted(self, admitted: Sequence[tuple[str, Delivery]]) -> int:
        """Free these holders' slots, waking a parked message of the key for each: one
        transaction."""
        if not admitted:
            return 0
        with self._db.write() as conn:
            return limits.release(conn, admitted, time.time())

    def renew_admitted(self, admitted: Sequence[tuple[str, Delivery]]) -> int:
        """Renew these holders' leases for ``lease_seconds`` from now."""
        if not admitted:
            return 0
        with self._db.write() as conn:
            return limits.renew(conn, admitted, time.time() + self.lease_seconds)

    def cancel(self, ids: Sequence[str]) -> list[Cancellation]:
        """Remove ready and scheduled messages, mark leased ones, all in one transaction;
        in the order of ``ids``.

        Due etas and expired leases count as ready, as ``reserve`` would find them.
        """
        unique = list(dict.fromkeys(ids))
        if not unique:
            return []
        found: dict[str, Cancellation] = {}
        with self._db.write() as conn:
            self._tidy(conn, time.time())
            for start in range(0, len(unique), IDS_PER_STATEMENT):
                chunk = unique[start : start + IDS_PER_STATEMENT]
                marks = ",".join("?" * len(chunk))
                removed = conn.execute(
                    f"""DELETE FROM messages
                    WHERE id IN ({marks}) AND state IN ('ready', 'scheduled')
                    RETURNING id, queue, state, body, attempt""",
                    chunk,
                ).fetchall()
                marked = conn.execute(
                    f"""UPDATE messages SET cancelled = 1
                    WHERE id IN ({marks}) AND state = 'leased'
                    RETURNING id, queue, state, body, attempt""",
                    chunk,
                ).fetchall()
                for id, queue, state, body, attempt in removed + marked:
                    found[id] = Cancellation(id, queue, _LOCATED[state], body, attempt)
        return [found[id] for id in unique if id in found]

    def cancel_requested(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids among ``deliveries`` whose message carries the cancel mark: one query
        (per ``IDS_PER_STATEMENT``) on the small index of marked messages."""
        ids = list(dict.fromkeys(d.id for d in deliveries))
        marked: set[str] = set()
        if not ids:
            return marked
        with self._db.read() as conn:
            for start in range(0, len(ids), IDS_PER_STATEMENT):
                chunk = ids[start : start + IDS_PER_STATEMENT]
                rows = conn.execute(_marked_sql(len(chunk)), chunk).fetchall()
                marked.update(row[0] for row in rows)
        return marked

    # Rate limits (and the rest of them: ``SQLiteRates``).

    def defer(self, deliveries: Sequence[Delivery], countdowns: Sequence[float]) -> int:
        """Put held messages back, scheduled ``countdowns`` from now, nothing counted."""
        if not deliveries:
            return 0
        with self._db.write() as conn:
            now = time.time()
            return conn.executemany(
                """UPDATE messages SET state = iif(?1 > 0, 'scheduled', 'ready'),
                    line_at = iif(?1 > 0, run_at, NULL), run_at = iif(?1 > 0, ?2 + ?1, run_at),
                    token = NULL, lease_until = NULL, deliveries = deliveries - 1
                WHERE id = ?3 AND token = ?4 AND state = 'leased'""",
                [
                    (countdown, now, d.id, d.token)
                    for d, countdown in zip(deliveries, countdowns, strict=True)
                ],
            ).rowcount

    # Administration: the rest of BrokerAdmin (cancel is above).

    def stats(self) -> dict[str, QueueStats]:
        """Counts per queue ever seen or paused, by name (see ``queue_depths``).

        Due etas and expired leases count as ready, as ``reserve`` would find them.
        """
        return {name: depth.stats() for name, depth in self.queue_depths().items()}

    def queue_depths(self) -> dict[str, QueueDepth]:
        """``stats`` with ready counts per priority and the oldest ready message's age.

        One statement: the rows of ``message_counts``, an index seek per queue and
        priority for the oldest ready message, and the due etas, expired leases and
        dead letters past their time to live that no transaction has moved yet (few:
        every reserve and recovery tick moves them), which it counts as ``reserve``
        would find them. Its cost grows with the number of queues and priorities, not
        with the number of messages.
        """
        now = time.time()
        with self._db.read() as conn:
            rows = conn.execute(_DEPTHS, (now, now - self.dead_letter_ttl)).fetchall()
            paused = dict(conn.execute("SELECT name, paused FROM queues").fetchall())
        ready: dict[str, dict[int | None, int]] = {}
        counts: dict[str, list[int]] = {}  # scheduled, leased, dead
        oldest: dict[str, float] = {}
        for queue, priority, n_ready, scheduled, leased, dead, first in rows:
            totals = counts.setdefault(queue, [0, 0, 0])
            totals[0] += scheduled
            totals[1] += leased
            totals[2] += dead
            if not n_ready:
                continue
            # A row written by others may hold a priority or time that is no number.
            key = priority if isinstance(priority, int) else None
            by_priority = ready.setdefault(queue, {})
            by_priority[key] = by_priority.get(key, 0) + n_ready
            if isinstance(first, int | float):
                oldest[queue] = min(oldest.get(queue, first), first)
        depths: dict[str, QueueDepth] = {}
        for name in sorted(set(paused) | set(counts)):
            scheduled, leased, dead = counts.get(name, (0, 0, 0))
            depths[name] = QueueDepth(
                name,
                ready.get(name, {}),
                scheduled=scheduled,
                running=leased,
                dead=dead,
                paused=bool(paused.get(name, 0)),
                oldest_age=max(now - oldest[name], 0.0) if name in oldest else None,
            )
        return depths

    def pause(self, queue: str) -> None:
        """Stop handing out messages from ``queue``."""
        with self._db.write() as conn:
            conn.execute(
                """INSERT INTO queues (name, paused) VALUES (?, 1)
                ON CONFLICT (name) DO UPDATE SET paused = 1""",
                (queue,),
            )

    def resume(self, queue: str) -> None:
        """Hand out messages from ``queue`` again (its commit wakes blocked reserves)."""
        with self._db.write() as conn:
            conn.execute("UPDATE queues SET paused = 0 WHERE name = ?", (queue,))

    def purge(self, queue: str) -> int:
        """Delete ready and scheduled messages of ``queue``; leased ones stay."""
        with self._db.write() as conn:
            self._tidy(conn, time.time())
            # One statement per state, so that each uses that state's index.
            ready = conn.execute(
                "DELETE FROM messages WHERE state = 'ready' AND queue = ?", (queue,)
            ).rowcount
            return (
                ready
                + conn.execute(
                    "DELETE FROM messages WHERE state = 'scheduled' AND queue = ?", (queue,)
                ).rowcount
            )

    def dead_letters(
        self, queue: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, newest first, of one queue or all."""
        return self._dead_letters(queue, None, offset, limit)

    def dead_letters_for(
        self, reason: str, queue: str | None = None, offset: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters with ``reason``, newest first, of one queue or all (every one
        kept, not only the newest)."""
        return self._dead_letters(queue, reason, offset, limit)

    def _dead_letters(
        self, queue: str | None, reason: str | None, offset: int, limit: int
    ) -> list[DeadLetter]:
        where = "state = 'dead' AND died > ?"
        params: tuple[object, ...] = (time.time() - self.dead_letter_ttl,)
        if queue is not None:
            where += " AND queue = ?"
            params += (queue,)
        if reason is not None:
            where += " AND reason = ?"
            params += (reason,)
        with self._db.read() as conn:
            rows = conn.execute(
                f"""SELECT id, queue, priority, body, attempt, reason, error, died
                FROM messages WHERE {where} ORDER BY died DESC, seq DESC LIMIT ? OFFSET ?""",
                (*params, max(limit, 0), max(offset, 0)),
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def dead_letter(self, id: str) -> DeadLetter | None:
        """The dead letter ``id``; None if ``id`` is not a dead letter."""
        with self._db.read() as conn:
            row = conn.execute(
                """SELECT id, queue, priority, body, attempt, reason, error, died
                FROM messages WHERE id = ? AND state = 'dead' AND died > ?""",
                (id, time.time() - self.dead_letter_ttl),
            ).fetchone()
        return None if row is None else DeadLetter(*row)

    def requeue_dead(self, ids: Sequence[str] | None = None, queue: str | None = None) -> int:
        """Make dead letters ready with attempt 0: ``ids`` (of ``queue``), else all (of it).

        One whose idempotency key another live message holds stays dead (``OR IGNORE``
        skips the rows that would break ``messages_queue_key``).
        """
        set_ready = """UPDATE OR IGNORE messages SET state = 'ready', run_at = ?, attempt = 0,
            deliveries = 0, reason = NULL, error = NULL, died = NULL WHERE state = 'dead'"""
        in_queue = " AND queue = ?" if queue is not None else ""
        by_queue: tuple[str, ...] = (queue,) if queue is not None else ()
        with self._db.write() as conn:
            now = time.time()
            self._tidy(conn, now)
            if ids is None:
                return conn.execute(set_ready + in_queue, (now, *by_queue)).rowcount
            return conn.executemany(
                set_ready + " AND id = ?" + in_queue,
                [(now, id, *by_queue) for id in dict.fromkeys(ids)],
            ).rowcount

    def purge_dead(self, queue: str | None = None) -> int:
        """Delete dead letters of ``queue`` (or all); returns how many."""
        with self._db.write() as conn:
            self._tidy(conn, time.time())
            if queue is None:
                return conn.execute("DELETE FROM messages WHERE state = 'dead'").rowcount
            return conn.execute(
                "DELETE FROM messages WHERE state = 'dead' AND queue = ?", (queue,)
            ).rowcount

    def delete(self, id: str) -> bool:
        """Remove one message wherever it is; its lease, if any, goes stale."""
        with self._db.write() as conn:
            self._tidy(conn, time.time())
            return bool(conn.execute("DELETE FROM messages WHERE id = ?", (id,)).rowcount)

    def locate(self, id: str) -> State | None:
        """QUEUED, SCHEDULED, STARTED or DEAD; None if gone.

        A due eta or an expired lease reads as QUEUED, and a dead letter past its
        time to live as gone, as ``reserve`` would find them.
        """
        row = self._find(id, "")
        return None if row is None else row[0]

    def peek(self, id: str, queue: str | None = None) -> Peeked | None:
        """The message ``id`` and where it is (as ``locate`` says); None if gone. One
        read of one row by its unique id: ``queue`` is not needed."""
        row = self._find(id, ", queue, priority, attempt, body")
        if row is None:
            return None
        state, queue_, priority, attempt, body = row
        # A row written by others may hold values of other types: read as reserve would.
        body = body if type(body) is bytes else str(body or "").encode()
        priority = priority if type(priority) is int else rowcheck.MAX_COUNT
        return Peeked(id, str(queue_), priority, body, rowcheck.count_or(attempt, 0), state)

    def _find(self, id: str, columns: str) -> tuple[Any, ...] | None:
        """Where message ``id`` is (as ``locate`` says), then ``columns`` of its row (a
        text of ``, name`` each); None if gone."""
        now = time.time()
        with self._db.read() as conn:
            # Compared in SQL, where a value of another type (a row written by others)
            # compares without error.
            row = conn.execute(
                f"""SELECT state, run_at <= ?2, lease_until <= ?2, died <= ?3{columns}
                FROM messages WHERE id = ?1""",
                (id, now, now - self.dead_letter_ttl),
            ).fetchone()
        if row is None:
            return None
        state, due, expired, old = row[:4]
        if (state == "scheduled" and due) or (state == "leased" and expired):
            return (State.QUEUED, *row[4:])
        if state == "dead" and old:
            return None
        where = _LOCATED.get(state)
        return None if where is None else (where, *row[4:])

    def ping(self) -> None:
        """Return if the file opens and answers a query; raise ``BrokerUnavailable`` otherwise."""
        try:
            with self._db.read() as conn:
                conn.execute("SELECT 1 FROM messages LIMIT 1").fetchall()
        except BrokerUnavailable:
            raise
        except Exception as exc:
            raise BrokerUnavailable(f"SQLite broker {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close this process's connections; the next call reopens them."""
        self._db.close()

    # Internals.

    def _reserve_once(
        self, queues: list[str], limit: int, order: ReserveOrder | None = None
    ) -> tuple[list[Delivery], float]:
        """One transaction: housekeeping, then lease. Returns the deliveries and, when there
        are none, the time at which something may become runnable."""
        with self._db.write() as conn:
            now = time.time()
            self._tidy(conn, now, queues)
            if not queues:
                return [], math.inf
            lease_until = now + self.lease_seconds
            line_order: ordering.SortKey = rowcheck.line_order
            if order is None:
                sql, params = _reserve_sql(len(queues)), (lease_until, limit, *queues)
            else:
                sql, params, line_order = ordering.statement(queues, order, lease_until, limit, now)
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "UTF-8" not in str(exc):
                    raise
                rows = rowcheck.drop_undecodable_ids(conn, lease_until, now)
            if rows:
                try:
                    rows.sort(key=line_order)
                except TypeError:  # a priority or run time that is not a number
                    rows.sort(key=rowcheck.lenient_line_order)
                try:
                    return [rowcheck.delivery(row) for row in rows], now
                except rowcheck.Malformed:
                    taken = rowcheck.repair(conn, rows, now)
                    if taken:
                        return taken, now
            return [], self._next_due(conn, queues, now)

    def _tidy(self, conn: sqlite3.Connection, now: float, queues: list[str] | None = None) -> int:
        """Promote due etas of ``queues`` (None: all) and, every ``RECOVER_EVERY`` seconds or
        when ``queues`` is None, expired leases, old dead letters, old rate slots, ended rate
        holds and the next window of stray rows (``_sqlite_rows.sweep``). Returns how many
        messages became ready."""
        if queues is None:
            moved: int = conn.execute(
                self._PROMOTE.format("SELECT name FROM queues"), (now,)
            ).rowcount
        else:
            marks = ",".join("?" * len(queues))
            moved = conn.execute(self._PROMOTE.format(marks), (*queues, now)).rowcount
        if queues is None or now >= self._next_recover:
            self._next_recover = now + RECOVER_EVERY
            moved += conn.execute(self._RECOVER, (now,)).rowcount
            conn.execute(self._EXPIRE_DEAD, (now - self.dead_letter_ttl,))
            tidy_rates(conn, now)
            conn.execute(self._EXPIRE_KEYS, (now,))
            self._sweep_from = rowcheck.sweep(conn, self._sweep_from, now)
        return moved

    def _peek(self, queues: list[str]) -> float:
        """Without the write lock: when a message of ``queues`` may be runnable."""
        with self._db.read() as conn:
            return self._next_due(conn, queues, time.time())

    def _next_due(self, conn: sqlite3.Connection, queues: Sequence[str], now: float) -> float:
        """``now`` if a message of ``queues`` is ready (queue not paused), else when the next
        eta falls due or lease expires (as the recovery tick will see it); inf if never."""
        if not queues:
            return math.inf
        ready, eta, lease = conn.execute(_due_sql(len(queues)), queues).fetchone()
        if ready:
            return now
        # A time that is not a number (a row written by others, which the sweep will
        # dead-letter) reads as the next recovery tick: it never makes a reserve fail.
        due = math.inf if eta is None else rowcheck.time_or(eta, self._next_recover)
        if lease is not None:
            due = min(due, max(rowcheck.time_or(lease, self._next_recover), self._next_recover))
        return due


def _key_hold(env: Envelope) -> float | None:
    """The ``key_hold`` column of a keyed message (see the schema)."""
    if env.key_until_start:
        return -1.0
    return env.key_ttl if env.key_ttl and env.key_ttl > 0 else None


# queue, priority, ready, scheduled, leased, dead, oldest ready run_at; summed per queue.
#
# The rows of message_counts, with the oldest ready run_at of each priority: the first
# entry of its range in messages_ready, one index seek. Then what the transactions that
# move messages have not moved yet (few: every reserve and recovery tick moves them),
# counted as reserve would find them: due etas (a seek per queue in messages_scheduled)
# and expired leases (the start of messages_leased) as ready rather than scheduled or
# leased, and dead letters past their time to live (the start of messages_dead) as
# gone. The table is read only for those rows.
_DEPTHS = """
    SELECT queue, priority, ready, scheduled, leased, dead, CASE WHEN ready THEN
            (SELECT min(run_at) FROM messages AS first WHERE state = 'ready'
                AND first.queue = counted.queue AND first.priority = counted.priority) END
        FROM message_counts AS counted WHERE ready OR scheduled OR leased OR dead
    UNION ALL
    SELECT queue, priority, count(*), -count(*), 0, 0, min(run_at)
        FROM queues CROSS JOIN messages
        WHERE state = 'scheduled' AND queue = name AND run_at <= ?1 GROUP BY queue, priority
    UNION ALL
    SELECT queue, priority, count(*), 0, -count(*), 0, min(run_at) FROM messages
        WHERE state = 'leased' AND lease_until <= ?1 GROUP BY queue, priority
    UNION ALL
    SELECT queue, NULL, 0, 0, 0, -count(*), NULL FROM messages
        WHERE state = 'dead' AND died <= ?2 GROUP BY queue
    UNION ALL
    SELECT queue, NULL, 0, 0, 0, -count(*), NULL FROM messages
        WHERE state = 'dead' AND died IS NULL GROUP BY queue
"""


@functools.lru_cache(maxsize=32)
def _due_sql(queues: int) -> str:
    """Is a message of ``queues`` ready; the next eta; the next lease expiry."""
    marks = ",".join(f"?{n + 1}" for n in range(queues))
    return f"""SELECT
        EXISTS (SELECT 1 FROM messages WHERE state = 'ready' AND queue IN ({marks})
            AND queue NOT IN (SELECT name FROM queues WHERE paused)),
        (SELECT min(run_at) FROM messages WHERE state = 'scheduled' AND queue IN ({marks})),
        (SELECT lease_until FROM messages WHERE state = 'leased' AND queue IN ({marks})
            ORDER BY lease_until LIMIT 1)"""


@functools.lru_cache(maxsize=32)
def _reserve_sql(queues: int) -> str:
    """The lease statement for ``queues`` queues; parameters: lease_until, limit, queues.

    A single ``queue IN (...)`` would sort every ready row of those queues; instead each
    queue gives its first ``limit`` rows by an index range scan, and only those are merged.
    """
    first = """SELECT seq, priority, run_at FROM messages WHERE state = 'ready' AND queue = ?{0}
        AND ?{0} NOT IN (SELECT name FROM queues WHERE paused)
        ORDER BY priority, run_at, seq LIMIT ?2"""
    if queues == 1:
        pick = first.format(3)
    else:
        arms = " UNION ALL ".join(f"SELECT * FROM ({first.format(n + 3)})" for n in range(queues))
        pick = f"SELECT seq FROM ({arms}) ORDER BY priority, run_at, seq LIMIT ?2"
    return rowcheck.lease_sql(f"SELECT seq FROM ({pick})")


class _NotAllHeld(Exception):
    """A delivery of a fenced settle was not held: roll back and check each one."""


def _in(ids: set[str] | None, id: str) -> bool:
    return ids is None or id in ids


def _write_nothing(conn: sqlite3.Connection, held: set[str]) -> None:
    pass


@functools.lru_cache(maxsize=32)
def _keyed_sql(ids: int) -> str:
    """Which of ``ids`` ids are leased messages holding their key for a time (not
    cancelled): id, token, queue, key, key_hold. Seeks in ``messages_key_hold``."""
    marks = ",".join("?" * ids)
    return f"""SELECT id, token, queue, key, key_hold FROM messages INDEXED BY messages_key_hold
        WHERE key_hold > 0 AND id IN ({marks}) AND state = 'leased' AND NOT cancelled
            AND key IS NOT NULL"""


@functools.lru_cache(maxsize=32)
def _marked_sql(ids: int) -> str:
    """Which of ``ids`` ids carry the cancel mark: seeks in the index of marked messages."""
    marks = ",".join("?" * ids)
    return f"""SELECT id FROM messages INDEXED BY messages_cancelled
        WHERE cancelled = 1 AND id IN ({marks})"""
