"""Which workers are online, from the worker events in the app's event log.

Every worker sends ``worker-online`` at start, ``worker-heartbeat`` every
``worker_heartbeat`` seconds and ``worker-offline`` when it stops gracefully. A
``WorkerRoll`` follows those events with a cursor of its own: each ``online``
call reads only what was logged since the last (the first reads the retained
log once), so asking often costs no more than following the log.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gopherq.events import START, EventType

if TYPE_CHECKING:
    from gopherq.app import GopherQ

WORKER_EVENTS = frozenset(
    {EventType.WORKER_ONLINE, EventType.WORKER_HEARTBEAT, EventType.WORKER_OFFLINE}
)
MISSED_BEATS = 3
"""Heartbeats a worker may miss before it counts as gone (killed, or cut off)."""
READ_LIMIT = 1000
"""Events per read while catching up."""
MAX_READS = 100
"""Reads per ``online`` call at most: a log written faster than it is read is caught
up with over several calls, never in one that does not end."""


class WorkerRoll:
    """The workers of ``app`` seen alive lately. Not thread-safe: one caller at a time."""

    def __init__(self, app: GopherQ) -> None:
        self.app = app
        self._cursor = START
        self._seen: dict[str, float] = {}  # worker name -> time of its last sign of life

    def online(self, now: float | None = None) -> int:
        """How many workers sent ``worker-online`` or a heartbeat within ``MISSED_BEATS``
        heartbeat intervals of ``now`` (unix seconds) and no ``worker-offline`` since.

        Raises ``ConfigurationError`` when the app's events are off.
        """
        self._catch_up()
        now = time.time() if now is None else now
        cutoff = now - MISSED_BEATS * self.app.settings.worker_heartbeat
        self._seen = {name: last for name, last in self._seen.items() if last >= cutoff}
        return len(self._seen)

    def _catch_up(self) -> None:
        backend = self.app.events.backend
        for _ in range(MAX_READS):
            events, cursor = backend.read(self._cursor, types=WORKER_EVENTS, limit=READ_LIMIT)
            for event in events:
                if event.worker is None:
                    continue
                if event.type == EventType.WORKER_OFFLINE:
                    self._seen.pop(event.worker, None)
                else:
                    self._seen[event.worker] = max(event.time, self._seen.get(event.worker, 0.0))
            if cursor == self._cursor:
                return
            self._cursor = cursor
