"""SQLite access store: tables beside the broker's, in the same database file."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from gopherq.access.audit import AuditEntry
from gopherq.access.keys import ApiKey
from gopherq.access.roles import Role
from gopherq.access.store import AccessStore
from gopherq.stores.sqlite import Database, sqlite_path

_KEY_COLUMNS = "id, name, role, created, expires, revoked, tasks, queues, rate, salt, digest"
_AUDIT_COLUMNS = "time, key, role, action, target, client, status, method, path"


class SQLiteAccessStore(AccessStore):
    """Keys and the audit log in the broker's SQLite file. See ``gopherq.access.store``."""

    # Every table is keyed by ns, the namespace (an app name):
    #
    # access_keys    one row per key; role by label; tasks and queues as JSON arrays
    #                (NULL: any); salt and digest of the secret, never the secret
    # access_audit   one row per mutating call, found by time
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS access_keys (
            ns TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL,
            revoked REAL,
            tasks TEXT,
            queues TEXT,
            rate TEXT,
            salt BLOB NOT NULL,
            digest BLOB NOT NULL,
            PRIMARY KEY (ns, id),
            UNIQUE (ns, name)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS access_audit (
            ns TEXT NOT NULL,
            time REAL NOT NULL,
            key TEXT,
            role TEXT,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            client TEXT NOT NULL,
            status INTEGER NOT NULL,
            method TEXT NOT NULL DEFAULT '',
            path TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE INDEX IF NOT EXISTS access_audit_time ON access_audit (ns, time)""",
    )

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self._db = Database(sqlite_path(url), self.SCHEMA)

    def add_key(self, key: ApiKey) -> bool:
        """Store a new key unless its name is taken."""
        row = (
            self.namespace,
            key.id,
            key.name,
            key.role.label,
            key.created,
            key.expires,
            key.revoked,
            _json(key.tasks),
            _json(key.queues),
            key.rate,
            key.salt,
            key.digest,
        )
        with self._db.write() as conn:
            added = conn.execute(
                f"INSERT INTO access_keys (ns, {_KEY_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                row,
            )
            return bool(added.rowcount)

    def key(self, key_id: str) -> ApiKey | None:
        """The key with this id."""
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM access_keys WHERE ns = ? AND id = ?",
                (self.namespace, key_id),
            ).fetchone()
        return None if row is None else _key(row)

    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM access_keys WHERE ns = ? ORDER BY created, name",
                (self.namespace,),
            ).fetchall()
        return [_key(row) for row in rows]

    def revoke(self, name: str, at: float) -> ApiKey | None:
        """Mark the named key revoked."""
        with self._db.write() as conn:
            row = conn.execute(
                f"""UPDATE access_keys SET revoked = coalesce(revoked, ?)
                WHERE ns = ? AND name = ? RETURNING {_KEY_COLUMNS}""",
                (at, self.namespace, name),
            ).fetchone()
        return None if row is None else _key(row)

    def append(
        self, entries: Sequence[AuditEntry], keep_after: float, max_count: int | None = None
    ) -> None:
        """Append, and delete the old entries. The count limit goes by row ids, which
        every app sharing the file draws from: with several apps, each keeps fewer."""
        rows = [(self.namespace, *dataclasses.astuple(e)) for e in entries]
        with self._db.write() as conn:
            conn.executemany(
                f"INSERT INTO access_audit (ns, {_AUDIT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute(
                "DELETE FROM access_audit WHERE ns = ? AND time < ?", (self.namespace, keep_after)
            )
            if max_count is not None:
                conn.execute(
                    """DELETE FROM access_audit WHERE ns = ?
                    AND rowid <= (SELECT max(rowid) FROM access_audit) - ?""",
                    (self.namespace, max_count),
                )

    def entries(self, since: float | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"""SELECT {_AUDIT_COLUMNS} FROM access_audit WHERE ns = ? AND time >= ?
                ORDER BY time DESC, rowid DESC LIMIT ?""",
                (self.namespace, -1.0 if since is None else since, limit),
            ).fetchall()
        return [AuditEntry(*row) for row in rows]

    def close(self) -> None:
        """Close this process's connections."""
        self._db.close()


def _json(names: tuple[str, ...] | None) -> str | None:
    return None if names is None else json.dumps(list(names))


def _key(row: sqlite3.Row | tuple[Any, ...]) -> ApiKey:
    key_id, name, role, created, expires, revoked, tasks, queues, rate, salt, digest = row
    return ApiKey(
        id=key_id,
        name=name,
        role=Role.parse(role),
        created=created,
        expires=expires,
        revoked=revoked,
        tasks=None if tasks is None else tuple(json.loads(tasks)),
        queues=None if queues is None else tuple(json.loads(queues)),
        rate=rate,
        salt=bytes(salt),
        digest=bytes(digest),
    )
