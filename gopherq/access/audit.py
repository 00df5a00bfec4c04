"""The audit log: one entry per mutating call, and a writer that keeps them off the
request path."""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("gopherq.access")

EXIT_TIMEOUT = 5.0
"""Seconds the process's exit waits for queued entries to be written."""
BATCH = 500
"""Most entries one write appends."""
LINGER = 0.05
"""Seconds the writer lets entries gather before a write (unless a batch is full or
someone waits in ``flush``): one write then carries a busy server's calls of that
time, rather than one write for each."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One mutating call: who, what, on what, from where, when, and how it ended."""

    time: float
    """Unix time the call was answered."""
    key: str | None
    """The key's name; None when no valid key came with it (a 401)."""
    role: str | None
    """The key's role (``operator``...); None without a valid key."""
    action: str
    """The route's name (``jobs.create``, ``queues.pause``); ``-`` for no route."""
    target: str
    """What it acted on: the ``id`` or ``name`` in the path, or a summary of the body."""
    client: str
    """The client's address (``host:port``) as the server saw it."""
    status: int
    """The HTTP status answered: the outcome."""
    method: str = ""
    path: str = ""

    def to_map(self) -> dict[str, Any]:
        """Plain values, for JSON (every field is one: no ``asdict`` deep copy)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_map(cls, data: dict[str, Any]) -> AuditEntry:
        """The entry ``to_map`` wrote."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class AuditWriter:
    """Appends entries in a thread of its own, in batches (``LINGER``), so that a
    request never waits for the store and never fails because of it: a failed write
    is logged and its entries dropped. At most ``backlog`` entries wait; more are
    dropped (logged).
    """

    def __init__(
        self, write: Callable[[Sequence[AuditEntry]], None], *, backlog: int = 10_000
    ) -> None:
        self._write = write
        self._backlog = backlog
        self._pending: deque[AuditEntry] = deque()
        self._busy = 0
        self._flushing = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0
        """Entries dropped: the backlog was full or the store failed."""

    def submit(self, entry: AuditEntry) -> None:
        """Queue ``entry`` for writing; returns at once."""
        with self._cond:
            if len(self._pending) >= self._backlog:
                self.dropped += 1
                logger.error("audit log backlog full: entry dropped (%s)", entry.action)
                return
            self._pending.append(entry)
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="gopherq-audit", daemon=True)
                self._thread.start()
                # Mounted in another app, nobody may call close: entries of calls
                # already answered are still written when the process exits.
                atexit.register(self.close, EXIT_TIMEOUT)
            if len(self._pending) in (1, BATCH):  # the writer waits for the first, or lingers
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued entry is written (or dropped); False on timeout."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()  # a lingering writer writes at once
            try:
                return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        atexit.unregister(self.close)
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                self._cond.wait_for(self._write_now, LINGER)
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), BATCH))]
                self._busy = len(batch)
            try:
                self._write(batch)
            except Exception:
                self.dropped += len(batch)
                logger.exception("audit log write failed: %d entries dropped", len(batch))
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()

    def _write_now(self) -> bool:
        return len(self._pending) >= BATCH or self._closed or self._flushing > 0
