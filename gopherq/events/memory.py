"""In-process event backend, for tests and eager mode.

Each ``MemoryEventBackend`` is its own log: a list of events numbered from 1,
with a condition that ``publish`` notifies, so a blocked ``read`` wakes at
once. Cursors are the numbers as strings.

URL: ``memory://`` (the rest is ignored).

Options:
    max_age (float): seconds an event is kept. Default one day.
    max_count (int): most events kept; the oldest go first. Default 100,000.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence

from gopherq.events.base import CLOCK_SLACK, JOB_EVENTS, Event, EventBackend, cursor_number


class MemoryEventBackend(EventBackend):
    """Events in a list, in order. See the module docstring."""

    def __init__(
        self, url: str = "memory://", *, max_age: float = 86400.0, max_count: int = 100_000
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.max_count = max(max_count, 1)
        self._changed = threading.Condition()
        self._log: list[Event] = []
        self._first = 1  # number of self._log[0]

    def publish(self, events: Sequence[Event]) -> None:
        """Append events, numbering them, and wake blocked readers."""
        if not events:
            return
        with self._changed:
            number = self._first + len(self._log)
            self._log.extend(e._replace(cursor=str(number + i)) for i, e in enumerate(events))
            self._trim()
            self._changed.notify_all()

    def read(
        self,
        cursor: str,
        *,
        types: frozenset[str] | None = None,
        limit: int = 100,
        timeout: float = 0.0,
    ) -> tuple[list[Event], str]:
        """Events after ``cursor`` of ``types``; blocks on the condition up to ``timeout``."""
        after = cursor_number(cursor)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found: list[Event] = []
                for index in range(max(after + 1 - self._first, 0), len(self._log)):
                    event = self._log[index]
                    after = self._first + index
                    if types is None or event.type in types:
                        found.append(event)
                        if len(found) >= limit:
                            break
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found, str(after)
                self._changed.wait(remaining)

    def last(
        self,
        limit: int = 1,
        *,
        types: frozenset[str] | None = None,
        since: float | None = None,
    ) -> list[Event]:
        """The newest ``limit`` events of ``types`` (from ``since``), oldest first."""
        found: list[Event] = []
        stop = -math.inf if since is None else since - CLOCK_SLACK
        after = -math.inf if since is None else since
        with self._changed:
            for event in reversed(self._log):
                if len(found) >= limit or event.time < stop:
                    break
                if (types is None or event.type in types) and event.time >= after:
                    found.append(event)
        return found[::-1]

    def job_events(
        self,
        id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = JOB_EVENTS,
    ) -> list[Event]:
        """The retained events of task ``id``, oldest first: its first ``limit``."""
        with self._changed:
            return [e for e in self._log if e.id == id][:limit]

    def cleanup(self) -> int:
        """Drop events past retention; returns how many."""
        with self._changed:
            return self._trim()

    def close(self) -> None:
        """Nothing to release; the log stays usable."""

    def _trim(self) -> int:
        cutoff = time.time() - self.max_age
        drop = max(len(self._log) - self.max_count, 0)
        while drop < len(self._log) and self._log[drop].time < cutoff:
            drop += 1
        if drop:
            del self._log[:drop]
            self._first += drop
        return drop
