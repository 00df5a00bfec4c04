"""In-process result backend, for tests and eager mode.

Each ``MemoryResultBackend`` is its own store. ``wait`` sleeps on a condition
that ``store`` notifies, so a waiter wakes as soon as its record is stored.

URL: ``memory://`` (the rest is ignored).

Options:
    expires (float): seconds a finished record is kept after it is stored.
        Expired records are invisible at once and deleted by ``cleanup``.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Sequence

from gopherq.results.base import JobCursor, JobPage, JobRecord, ResultBackend, sent_within
from gopherq.states import State


class MemoryResultBackend(ResultBackend):
    """Job records in a dict, by id. See the module docstring."""

    def __init__(self, url: str = "memory://", *, expires: float = 86400.0) -> None:
        self.url = url
        self.expires = expires
        self._changed = threading.Condition()
        self._records: dict[str, tuple[JobRecord, float]] = {}  # id -> (record, expiry)
        self._marks: dict[str, float] = {}  # done-marker key -> expiry

    def store(self, records: Sequence[JobRecord]) -> None:
        """Insert or replace records; a finished one starts its time to live."""
        with self._changed:
            now = time.time()
            for record in records:
                expiry = now + self.expires if record.state.finished else math.inf
                self._records[record.id] = (record, expiry)
            self._changed.notify_all()

    def get(self, id: str) -> JobRecord | None:
        """The record of ``id``, or None if unknown or expired."""
        with self._changed:
            return self._get(id)

    def wait(self, id: str, timeout: float | None) -> JobRecord | None:
        """Block until ``id`` is finished or ``timeout`` passes; the record as it then is."""
        with self._changed:
            self._changed.wait_for(lambda: self._finished(id), timeout)
            return self._get(id)

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
        ``since``/``until`` where given, after ``after``. A record without ``created``
        sorts as sent at 0."""
        end = None if after is None else (after.created or 0.0, after.id)
        with self._changed:
            now = time.time()
            found = [
                record
                for record, expiry in self._records.values()
                if expiry > now
                and (state is None or record.state is state)
                and (task is None or record.task == task)
                and (queue is None or record.queue == queue)
                and sent_within(record.created, since, until)
                and (end is None or _order(record) < end)
            ]
        records = heapq.nlargest(max(limit, 0) + 1, found, key=_order)
        if len(records) <= limit:
            return JobPage(records)
        last = records[limit - 1] if limit > 0 else None
        return JobPage(records[:limit], None if last is None else JobCursor(*_order(last)))

    def delete(self, id: str) -> bool:
        """Forget a record; True if it existed (expired ones count as gone)."""
        with self._changed:
            found = self._get(id) is not None
            self._records.pop(id, None)
        return found

    def cleanup(self) -> int:
        """Delete expired records; returns how many."""
        with self._changed:
            now = time.time()
            expired = [id for id, (_, expiry) in self._records.items() if expiry <= now]
            for id in expired:
                del self._records[id]
            for key in [key for key, expiry in self._marks.items() if expiry <= now]:
                del self._marks[key]
        return len(expired)

    def mark(self, key: str, ttl: float) -> None:
        """Set the done-marker ``key`` for ``ttl`` seconds."""
        with self._changed:
            self._marks[key] = time.time() + ttl

    def marked(self, key: str) -> bool:
        """Whether the done-marker ``key`` is set and unexpired."""
        with self._changed:
            return self._marks.get(key, 0.0) > time.time()

    def close(self) -> None:
        """Nothing to release; the store stays usable."""

    def _get(self, id: str) -> JobRecord | None:
        entry = self._records.get(id)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]

    def _finished(self, id: str) -> bool:
        record = self._get(id)
        return record is not None and record.state.finished


def _order(record: JobRecord) -> tuple[float, str]:
    return (record.created or 0.0, record.id)
