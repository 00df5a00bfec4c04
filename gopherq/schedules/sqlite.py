"""SQLite schedule store: tables beside the broker's, in the same database file.

Every beat on the machine shares the file, as workers do. Each step is one
``BEGIN IMMEDIATE`` transaction, so a claim checks the lease and sets the
cursors atomically. The clock is the process clock: everyone sharing a SQLite
file shares the machine, hence the clock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from gopherq.schedules.store import Claim, EntryState, Lease, ScheduleStore
from gopherq.stores.sqlite import Database, sqlite_path


class SQLiteScheduleStore(ScheduleStore):
    """A schedule store in the broker's SQLite file. See ``gopherq.schedules.store``."""

    # Every table is keyed by ns, the namespace (an app name):
    #
    # beat_lease     one row per ns at most: the leader's token and when its lease lapses
    # beat_version   one row per ns: bumped by every change of entries or pauses
    # beat_entries   dynamic entries: name -> encoded spec
    # beat_state     a cursor per entry (see EntryState); paused NULL means as declared
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS beat_lease (
            ns TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            expires REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS beat_version (
            ns TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS beat_entries (
            ns TEXT NOT NULL,
            name TEXT NOT NULL,
            spec BLOB NOT NULL,
            PRIMARY KEY (ns, name)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS beat_state (
            ns TEXT NOT NULL,
            name TEXT NOT NULL,
            tick INTEGER,
            pending INTEGER NOT NULL DEFAULT 0,
            since REAL NOT NULL DEFAULT 0,
            fingerprint TEXT NOT NULL DEFAULT '',
            paused INTEGER,
            PRIMARY KEY (ns, name)
        ) WITHOUT ROWID""",
    )

    _BUMP = """INSERT INTO beat_version (ns, version) VALUES (?, 1)
        ON CONFLICT (ns) DO UPDATE SET version = version + 1"""
    _CLAIM = """UPDATE beat_state SET tick = ?1, pending = ?2, since = max(since, ?3),
        fingerprint = ?4 WHERE ns = ?5 AND name = ?6 AND tick = ?7"""
    _CLAIM_NEW = """INSERT INTO beat_state (tick, pending, since, fingerprint, ns, name)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6)
        ON CONFLICT (ns, name) DO UPDATE SET tick = ?1, pending = ?2,
            since = max(since, ?3), fingerprint = ?4 WHERE tick IS NULL"""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self._db = Database(sqlite_path(url), self.SCHEMA)

    def acquire(self, owner: str, ttl: float) -> Lease:
        """Take the lease if free, expired or ``owner``'s; return who holds it."""
        with self._db.read() as conn:  # a follower's poll needs no write lock
            held = self._lease(conn, owner, time.time())
        if held is not None:
            return held
        with self._db.write() as conn:
            now = time.time()
            held = self._lease(conn, owner, now)
            if held is not None:
                return held
            conn.execute(
                """INSERT INTO beat_lease (ns, owner, expires) VALUES (?, ?, ?)
                ON CONFLICT (ns) DO UPDATE
                    SET owner = excluded.owner, expires = excluded.expires""",
                (self.namespace, owner, now + ttl),
            )
            return Lease(owner, now + ttl, now)

    def _lease(self, conn: sqlite3.Connection, owner: str, now: float) -> Lease | None:
        """The lease if someone else holds it; None if ``owner`` may take it."""
        row = conn.execute(
            "SELECT owner, expires FROM beat_lease WHERE ns = ?", (self.namespace,)
        ).fetchone()
        if row is None or row[1] <= now or row[0] == owner:
            return None
        return Lease(row[0], row[1], now)

    def release(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM beat_lease WHERE ns = ? AND owner = ?", (self.namespace, owner)
            )

    def states(self) -> dict[str, EntryState]:
        """Every cursor, by name."""
        with self._db.read() as conn:
            rows = conn.execute(
                """SELECT name, tick, pending, since, fingerprint, paused FROM beat_state
                WHERE ns = ?""",
                (self.namespace,),
            ).fetchall()
        return {
            name: EntryState(
                tick, bool(pending), since, fp, None if paused is None else paused == 1
            )
            for name, tick, pending, since, fp, paused in rows
        }

    def claim(self, owner: str, claims: Sequence[Claim]) -> list[bool]:
        """Apply the claims whose tick is still as expected, while ``owner`` leads."""
        with self._db.write() as conn:
            if not self._holds(conn, owner):
                return [False] * len(claims)
            applied = []
            for c in claims:
                values = (c.tick, int(c.pending), c.since, c.fingerprint, self.namespace, c.name)
                if c.expected is None:  # no cursor yet, or one without a tick
                    changed = conn.execute(self._CLAIM_NEW, values).rowcount
                else:
                    changed = conn.execute(self._CLAIM, (*values, c.expected)).rowcount
                applied.append(bool(changed))
            return applied

    def _holds(self, conn: sqlite3.Connection, owner: str) -> bool:
        """Whether ``owner`` holds an unexpired lease."""
        row = conn.execute(
            "SELECT expires FROM beat_lease WHERE ns = ? AND owner = ?", (self.namespace, owner)
        ).fetchone()
        return row is not None and row[0] > time.time()

    def confirm(self, done: Sequence[tuple[str, int]]) -> None:
        """Clear ``pending`` where the cursor is still at the tick."""
        if not done:
            return
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE beat_state SET pending = 0 WHERE ns = ? AND name = ? AND tick = ?",
                [(self.namespace, name, tick) for name, tick in done],
            )

    def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume; resuming skips the ticks missed meanwhile."""
        with self._db.write() as conn:
            conn.execute(
                """INSERT INTO beat_state (ns, name, paused, since) VALUES (?1, ?2, ?3, ?4)
                ON CONFLICT (ns, name) DO UPDATE SET paused = ?3,
                    since = iif(?3, since, max(since, ?4))""",
                (self.namespace, name, int(paused), 0.0 if paused else time.time()),
            )
            conn.execute(self._BUMP, (self.namespace,))

    def entries(self) -> tuple[int, dict[str, bytes]]:
        """The version and the dynamic entries (the version read first: a change in
        between shows as a newer version at the next poll)."""
        with self._db.read() as conn:
            version = self._version(conn)
            rows = conn.execute(
                "SELECT name, spec FROM beat_entries WHERE ns = ?", (self.namespace,)
            ).fetchall()
        return version, dict(rows)

    def version(self) -> int:
        """Bumped by every put, delete and pause change."""
        with self._db.read() as conn:
            return self._version(conn)

    def _version(self, conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "SELECT version FROM beat_version WHERE ns = ?", (self.namespace,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def put(self, name: str, spec: bytes) -> None:
        """Add or replace a dynamic entry."""
        with self._db.write() as conn:
            conn.execute(
                """INSERT INTO beat_entries (ns, name, spec) VALUES (?, ?, ?)
                ON CONFLICT (ns, name) DO UPDATE SET spec = excluded.spec""",
                (self.namespace, name, spec),
            )
            conn.execute(self._BUMP, (self.namespace,))

    def delete(self, name: str) -> bool:
        """Delete a dynamic entry and its cursor."""
        key = (self.namespace, name)
        with self._db.write() as conn:
            found = conn.execute("DELETE FROM beat_entries WHERE ns = ? AND name = ?", key)
            conn.execute("DELETE FROM beat_state WHERE ns = ? AND name = ?", key)
            conn.execute(self._BUMP, (self.namespace,))
            return bool(found.rowcount)

    def close(self) -> None:
        """Close this process's connections."""
        self._db.close()
