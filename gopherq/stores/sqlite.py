"""The SQLite file that the broker, result backend, event log and schedule store share.

``Database`` holds connections, one per process and thread, opened lazily and
never used across ``fork``. ``ChangeWaiter`` sleeps until the file may have
changed, without polling:

Every commit, by any process on the machine, appends frames to the database's
``-wal`` file. On Linux, ``ChangeWaiter`` watches the database's directory with
inotify for ``IN_MODIFY`` on that file (a directory watch, because SQLite
deletes and recreates the ``-wal`` file when the last connection closes), so a
sleeping process wakes within a millisecond of a commit and costs no CPU while
nothing happens. Where inotify is missing (other systems, or the per-user
inotify limits are exhausted) it polls instead, backing off from 5 ms to 100 ms.

A waiter belongs to one thread of one process: inotify events are consumed by
whoever reads them, so a waiter must never be shared or used across ``fork``.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from gopherq.errors import BrokerError, BrokerUnavailable, ConfigurationError
from gopherq.redaction import redact_url
from gopherq.stores.sqlite_guard import prepare_file

# Longest single sleep even with inotify: a safety net against missed events (a
# file system that does not report them); one extra query a second costs nothing.
MAX_SLEEP = 1.0
MIN_SQLITE = (3, 35, 0)


class ChangeWaiter:
    """Blocks until the database at ``path`` may have changed, or a timeout.

    Use it as: ``reset()``, then check your condition, then ``wait()`` and check
    again, in a loop. A commit that lands between the check and ``wait()`` is not
    lost: its event stays queued and ``wait()`` returns at once.

    The event fires when the writer appends to the WAL, a moment before readers
    can see its commit. So after an event, while the caller keeps waiting (its
    check found nothing), the next waits are cut short at ``SETTLE`` intervals
    and the caller checks again, in case its check ran in that moment.

    Every commit wakes every waiter, and on a busy file most wake-ups find
    nothing for their caller (a worker idle on one queue while another is busy).
    So after ``BURST`` wake-ups in a row, the next come at most every ``MIN_GAP``
    seconds: a busy file costs an idle waiter at most a few hundred cheap checks
    a second, and what it waits for arrives at most ``MIN_GAP`` late.
    """

    MIN_POLL = 0.005
    MAX_POLL = 0.1
    SETTLE = (0.002, 0.02, 0.2)
    BURST = 4
    MIN_GAP = 0.002

    def __init__(self, path: str) -> None:
        directory, name = os.path.split(os.path.abspath(path))
        self._wal_name = name + "-wal"
        self._interval = self.MIN_POLL
        self._settle = len(self.SETTLE)  # index into SETTLE; past the end: not settling
        self._woke = -math.inf  # when wait() last returned on a change
        self._wakes = 0  # wake-ups on a change since reset()
        self._inotify: Any = None
        self._overflow = 0
        try:
            from inotify_simple import INotify, flags
        except ImportError:  # not Linux, or the package is missing: poll
            return
        try:
            inotify = INotify()
        except OSError:  # fs.inotify.max_user_instances reached: poll
            return
        try:
            inotify.add_watch(directory, flags.MODIFY | flags.CREATE)
        except OSError:
            inotify.close()
            return
        self._inotify = inotify
        self._overflow = int(flags.Q_OVERFLOW)

    @property
    def polling(self) -> bool:
        """True when no change notification is available and ``wait`` polls."""
        return self._inotify is None

    def reset(self) -> None:
        """Forget changes seen so far; call it just before checking your condition."""
        self._interval = self.MIN_POLL
        self._settle = len(self.SETTLE)
        self._woke = -math.inf
        self._wakes = 0
        if self._inotify is not None:
            self._inotify.read(timeout=0)

    def wait(self, timeout: float) -> bool:
        """Sleep until the database changes or ``timeout`` seconds pass (at most ``MAX_SLEEP``).

        Returns True if a change was seen, False on timeout. When polling, it
        returns False after the current poll interval: the caller checks again.
        """
        timeout = min(timeout, MAX_SLEEP)
        if self._inotify is None:
            if timeout > 0:
                time.sleep(min(timeout, self._interval))
            self._interval = min(self._interval * 2, self.MAX_POLL)
            return False
        if self._settle < len(self.SETTLE):
            timeout = min(timeout, self.SETTLE[self._settle])
            self._settle += 1
        deadline = time.monotonic() + timeout
        while True:
            millis = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            for event in self._inotify.read(timeout=millis):
                if event.name == self._wal_name or event.mask & self._overflow:
                    self._pause_after_wake()
                    return True
            # Only other files in the directory changed, or the time is up.
            if time.monotonic() >= deadline:
                return False

    def _pause_after_wake(self) -> None:
        self._wakes += 1
        gap = self._woke + self.MIN_GAP - time.monotonic()
        if self._wakes > self.BURST and gap > 0:  # many fruitless wake-ups: let changes gather
            time.sleep(gap)
            self._inotify.read(timeout=0)
        self._woke = time.monotonic()
        self._settle = 0

    def close(self) -> None:
        """Release the inotify descriptor; the waiter then polls."""
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None


def sqlite_path(url: str) -> str:
    """The absolute path a ``sqlite:///...`` URL names; relative paths start at the cwd.

    Resolved once, so that a later ``chdir`` (a daemon) keeps the same file.
    """
    scheme, sep, rest = url.partition("://")
    path = rest.partition("?")[0]
    if scheme.lower() != "sqlite" or not sep or not path.startswith("/") or len(path) < 2:
        raise ConfigurationError(
            f"bad SQLite URL {redact_url(url)!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = path[1:]
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"bad SQLite URL {redact_url(url)!r}: processes share the store through a file; "
            "use memory:// for an in-process broker"
        )
    return os.path.abspath(os.path.expanduser(path))


class Database:
    """Connections to one SQLite file: one per process and thread, opened lazily.

    ``write()`` is a ``BEGIN IMMEDIATE`` transaction, ``read()`` a connection for
    single statements; both turn SQLite errors into ``BrokerError``, or into
    ``BrokerUnavailable`` when trying later may work: the file cannot be opened
    or read, the disk is full, an I/O error, the lock held past ``BUSY_TIMEOUT``
    (see ``_UNAVAILABLE``). ``schema``
    statements (``CREATE ... IF NOT EXISTS``) run once when objects are missing.

    Migrations: ``added`` lists columns added to a table after files were
    written with its first ``CREATE TABLE``, as ``(table, column, definition)``
    (the ``CREATE TABLE`` in ``schema`` carries them too, for new files). On open,
    a table that exists without one of them gets it (``ALTER TABLE ... ADD
    COLUMN``, appended after its other columns) before the ``schema`` statements
    run, so that those may use it. There is no version number: the file is shared
    by several stores, each checking its own tables. ``dropped`` names indexes of
    earlier releases that files created before still have: they are dropped in the
    same step.

    Derived data: ``derived`` lists ``Derived`` tables that triggers keep in step
    with another (counts of its rows). When one of a ``Derived``'s objects is
    missing from the file (a new file, or one from before it), its ``rebuild``
    statements run after the ``schema`` statements, in the same transaction, so
    that no write by another process falls between the rebuild and the triggers.
    """

    BUSY_TIMEOUT = 30.0
    """Seconds a writer waits for the write lock before failing with ``BrokerUnavailable``."""
    PRAGMAS = (
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = NORMAL",  # see the module docstring: durability
        "PRAGMA journal_size_limit = 67108864",  # truncate a WAL grown past 64 MiB
        "PRAGMA secure_delete = FAST",  # no extra I/O to zero deleted bodies
    )

    def __init__(
        self,
        path: str,
        schema: Sequence[str],
        added: Sequence[tuple[str, str, str]] = (),
        dropped: Sequence[str] = (),
        derived: Sequence[Derived] = (),
    ) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigurationError(
                f"the SQLite broker needs SQLite >= 3.35 (UPDATE ... RETURNING); this Python "
                f"uses SQLite {sqlite3.sqlite_version}: use memory:// or another broker"
            )
        self.path = path
        self._schema = schema
        self._added = added
        self._dropped = frozenset(dropped)
        self._derived = derived
        self._names = {stmt.split("EXISTS", 1)[1].split()[0] for stmt in schema}
        self._pid = os.getpid()
        self._slots: dict[int, _Slot] = {}  # by thread ident, for this process
        self._was_full = False  # a write failed on a full disk: see _give_back_wal
        _DATABASES.add(self)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use in this process."""
        return self._slot().conn

    def _slot(self) -> _Slot:
        if self._pid != os.getpid():
            self._forget_parent()
        slot = self._slots.get(threading.get_ident())
        if slot is None:
            slot = self._slots[threading.get_ident()] = _Slot(self._open())
        return slot

    def waiter(self) -> ChangeWaiter:
        """This thread's change waiter for the file."""
        self.connection()  # the file exists, so its directory does
        slot = self._slots[threading.get_ident()]
        if slot.waiter is None:
            slot.waiter = ChangeWaiter(self.path)
        return slot.waiter

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed when the block ends, rolled back on error."""
        slot = self._slot()
        # close() in another thread waits for the transaction
        with slot.lock, self._transaction(slot.conn) as conn:
            yield conn

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """``write``'s transaction on ``conn``."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                # If the connection is broken, the original error says why.
                with suppress(sqlite3.Error):
                    conn.rollback()
            if isinstance(exc, sqlite3.Error):
                if _code(exc) == sqlite3.SQLITE_FULL:
                    self._was_full = True
                raise _error(self.path, exc) from exc
            raise
        if self._was_full:
            self._give_back_wal(conn)

    def _give_back_wal(self, conn: sqlite3.Connection) -> None:
        """After a full disk, copy the WAL into the file and truncate it, at the first
        commit that succeeds again. SQLite checkpoints on its own only once the WAL
        holds ``wal_autocheckpoint`` pages (4 MiB): on a small disk the WAL would
        otherwise take the space freed meanwhile and keep the disk full for good."""
        with suppress(sqlite3.Error):
            (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self._was_full = bool(busy)  # readers kept it from finishing: again next time

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads, each statement its own snapshot."""
        slot = self._slot()
        with slot.lock:  # close() in another thread waits for the reads
            try:
                yield slot.conn
            except sqlite3.Error as exc:
                raise _error(self.path, exc) from exc

    def close(self) -> None:
        """Close every connection this process opened; later calls reopen."""
        if self._pid != os.getpid():
            self._forget_parent()
            return
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            # Another thread may be using its connection: closing it under a running
            # statement crashes the process, so wait for it to be done.
            with slot.lock:
                slot.close()

    def close_thread(self) -> None:
        """Close this thread's connection unless it is inside a transaction."""
        if self._pid != os.getpid():
            return
        slot = self._slots.get(threading.get_ident())
        if slot is not None and not slot.conn.in_transaction:
            del self._slots[threading.get_ident()]
            slot.close()

    def _forget_parent(self) -> None:
        # Connections opened before a fork belong to the parent: closing them here
        # could drop the locks that keep SQLite from deleting a WAL still in use.
        _INHERITED.append(self._slots)
        self._slots = {}
        self._pid = os.getpid()

    def _open(self) -> sqlite3.Connection:
        prepare_file(self.path)  # created 0600; no symlink planted by another user
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.BUSY_TIMEOUT,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,  # so that close() can close every thread's
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from exc
        try:
            for pragma in self.PRAGMAS:
                conn.execute(pragma)
            present = _names(conn)
            if not self._names <= present or self._dropped & present or self._missing_columns(conn):
                conn.execute("BEGIN IMMEDIATE")
                # Again under the write lock: another process may have migrated meanwhile.
                present = _names(conn)
                for table, column, definition in self._missing_columns(conn):
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                for index in self._dropped:
                    conn.execute(f"DROP INDEX IF EXISTS {index}")
                for stmt in self._schema:
                    conn.execute(stmt)
                for derived in self._derived:
                    if not derived.names <= present:
                        for stmt in derived.rebuild:
                            conn.execute(stmt)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise _error(self.path, exc) from exc
        return conn

    def _missing_columns(self, conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
        """The ``added`` columns of existing tables that lack them."""
        missing: list[tuple[str, str, str]] = []
        columns: dict[str, set[str]] = {}
        for table, column, definition in self._added:
            if table not in columns:
                rows = conn.execute("SELECT name FROM pragma_table_info(?)", (table,))
                columns[table] = {row[0] for row in rows}
            if columns[table] and column not in columns[table]:
                missing.append((table, column, definition))
        return missing


@dataclass(frozen=True, slots=True)
class Derived:
    """A table that triggers keep in step with another (see ``Database``): ``names`` are
    its table and triggers, ``rebuild`` the statements that fill it from scratch."""

    names: frozenset[str]
    rebuild: tuple[str, ...]


def _names(conn: sqlite3.Connection) -> set[str]:
    """The tables, indexes and triggers of the file."""
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


class _Slot:
    """One thread's connection and, once it has blocked, its change waiter."""

    __slots__ = ("conn", "lock", "waiter")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.lock = threading.RLock()
        """Held while the connection is in use (``read``, ``write``) and by ``close``."""
        self.waiter: ChangeWaiter | None = None

    def close(self) -> None:
        self.conn.close()
        if self.waiter is not None:
            self.waiter.close()


# Primary result codes that say "not now" rather than "this operation is wrong": the
# caller may try again later (a worker backs off, a producer may hold the message).
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_CANTOPEN,  # the file or its directory is missing or unreadable
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_IOERR,  # every extended I/O error (IOERR_WRITE, IOERR_FSYNC, ...)
        sqlite3.SQLITE_FULL,  # disk (or max_page_count) full
        sqlite3.SQLITE_BUSY,  # the lock was held by another process past BUSY_TIMEOUT
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_PROTOCOL,  # a WAL lock race that did not settle
    }
)
# Result codes whose text names no cause: ``_file_problem`` looks for one.
_FILE_PROBLEMS = frozenset({sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY})
_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()
_INHERITED: list[dict[int, _Slot]] = []  # a child's copies of its parent's connections


def _code(exc: sqlite3.Error) -> int:
    """The primary result code of ``exc`` (extended codes carry it in their low byte)."""
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def _error(path: str, exc: sqlite3.Error) -> BrokerError:
    """``exc`` as ``BrokerUnavailable`` when its primary result code is in ``_UNAVAILABLE``
    (extended codes carry it in their low byte), else as ``BrokerError``."""
    code = _code(exc)
    kind = BrokerUnavailable if code in _UNAVAILABLE else BrokerError
    cause = _file_problem(path) if code in _FILE_PROBLEMS else ""
    return kind(f"SQLite {path}: {exc}" + (f": {cause}" if cause else ""))


def _file_problem(path: str) -> str:
    """Why SQLite may not open or write ``path``, which its own text ("unable to open
    database file") leaves out; '' when no cause is seen."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "it is a directory, not a file"
    if not os.path.isdir(directory):
        return f"the directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"the directory {directory} is not writable by this user "
            "(SQLite creates the -wal and -shm files beside the database)"
        )
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return "this user may not read and write the file"
    return ""


def _before_fork() -> None:
    # The forking thread is between calls: close its connections so that the child
    # starts clean (see Database._forget_parent for those of other threads).
    for database in list(_DATABASES):
        database.close_thread()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork)
