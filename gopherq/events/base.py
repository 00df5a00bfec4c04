"""Events as data, and the event backend contract.

An ``Event`` is one lifecycle transition of a task or a worker, as a small map.
Backends keep a log of them in order: ``publish`` appends a batch, ``read``
returns what follows a cursor (blocking up to a timeout for more), ``last``
the newest. A cursor is an opaque string that orders events within one
backend; ``START`` is before every event. Readers hold their own cursors, so
any number of them each see every event, and one that restarts from a saved
cursor misses nothing still retained. Retention is by age and by count.

The contract is shaped for a log with blocking reads: a Redis stream fits it
as ``XADD ... MAXLEN ~ count`` per batch (pipelined), ``XREAD BLOCK`` from the
cursor, ``XREVRANGE ... COUNT`` for ``last`` and ``XTRIM MINID`` for age.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack

from gopherq.errors import ConfigurationError, DecodeError
from gopherq.redaction import UrlRepr

START = "0"
"""The cursor before every event."""

JOB_EVENTS = 200
"""Most events ``job_events`` returns by default."""
JOB_SCAN = 5000
"""Most events a backend without a per-task index searches for one task's."""
SIDE_TYPES = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})
"""Event types the SQLite and Redis backends also keep in a log of their own, so that
``last`` of these types alone reads a few events, not the whole log."""
CLOCK_SLACK = 5.0
"""Seconds by which events' own times (each producer's clock) may run out of the
log's order: searches bounded by a time look that much further back."""

NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
"""The ``extra`` of events without one (shared, read-only)."""


class EventType(StrEnum):
    """Every event type; the value is what ``Event.type`` holds."""

    TASK_ENQUEUED = "task-enqueued"
    TASK_SCHEDULED = "task-scheduled"
    TASK_STARTED = "task-started"
    TASK_PROGRESS = "task-progress"
    TASK_SUCCEEDED = "task-succeeded"
    TASK_FAILED = "task-failed"
    TASK_RETRIED = "task-retried"
    TASK_DEAD = "task-dead"
    TASK_CANCELLED = "task-cancelled"
    TASK_EXPIRED = "task-expired"
    WORKER_ONLINE = "worker-online"
    WORKER_HEARTBEAT = "worker-heartbeat"
    WORKER_OFFLINE = "worker-offline"
    BEAT_TICK = "beat-tick"


EVENT_TYPES = frozenset(kind.value for kind in EventType)
"""Every event type name."""


def check_types(types: str | Collection[str] | None) -> frozenset[str] | None:
    """Validate event type names (one or many); None means every type.

    An unknown name raises ``ConfigurationError`` with the closest known one.
    """
    if types is None:
        return None
    names = frozenset([types] if isinstance(types, str) else types)
    for name in names - EVENT_TYPES:
        close = difflib.get_close_matches(name, EVENT_TYPES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(f"unknown event type {name!r}{hint}")
    return names


class Event(NamedTuple):
    """One lifecycle event. Task events carry the task's id, name and queue;
    worker events only ``worker``. ``extra`` holds the fields of its type
    (see docs/events.md); ``cursor`` is set on events read from a backend.

    A named tuple, so that the hot path builds one cheaply and a backend packs
    it as a msgpack array (``event[:8]``, without the cursor).
    """

    type: str
    time: float
    """Unix seconds."""
    id: str | None = None
    task: str | None = None
    queue: str | None = None
    worker: str | None = None
    attempt: int | None = None
    """Executions of the task before this one (0 on the first run)."""
    extra: Mapping[str, Any] = NO_EXTRA
    cursor: str = ""

    def to_map(self) -> dict[str, Any]:
        """The event as a JSON-able map (without its cursor); unset fields left out."""
        out: dict[str, Any] = {"type": self.type, "time": self.time}
        for name in ("id", "task", "queue", "worker", "attempt"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_array(cls, data: Any, cursor: str) -> Event:
        """Rebuild an event from its first eight fields, as a backend stored them."""
        try:
            kind, time, id, task, queue, worker, attempt, extra = data
            return cls(kind, time, id, task, queue, worker, attempt, extra or NO_EXTRA, cursor)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"malformed event: {exc}") from exc


def pack_events(events: Sequence[Event]) -> bytes:
    """Events as one msgpack array of arrays (cursors left out)."""
    # default=dict: the read-only NO_EXTRA mapping packs as an empty map
    packed: bytes = msgpack.packb([e[:8] for e in events], use_bin_type=True, default=dict)
    return packed


def pack_event(event: Event) -> bytes:
    """One event as a msgpack array (its cursor left out)."""
    packed: bytes = msgpack.packb(event[:8], use_bin_type=True, default=dict)
    return packed


def unpack_event(blob: bytes) -> Any:
    """The array ``pack_event`` packed; raise ``DecodeError`` if unreadable."""
    try:
        return msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"unreadable event: {exc}") from exc


def unpack_events(blob: bytes) -> list[Any]:
    """The arrays ``pack_events`` packed; raise ``DecodeError`` if unreadable."""
    try:
        data = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"unreadable events: {exc}") from exc
    if not isinstance(data, list):
        raise DecodeError("unreadable events: not an array")
    return data


def cursor_number(cursor: str) -> int:
    """The sequence number in a cursor of the memory and SQLite backends."""
    try:
        number = int(cursor)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise ConfigurationError(f"bad event cursor {cursor!r}: expected a number, or '0'")
    return number


class EventBackend(UrlRepr, ABC):
    """An ordered log of events, read by cursor. See the module docstring."""

    url: str

    @abstractmethod
    def publish(self, events: Sequence[Event]) -> None:
        """Append events, in order, in one step."""

    @abstractmethod
    def read(
        self,
        cursor: str,
        *,
        types: frozenset[str] | None = None,
        limit: int = 100,
        timeout: float = 0.0,
    ) -> tuple[list[Event], str]:
        """Up to ``limit`` events after ``cursor``, oldest first, of ``types`` (None: all).

        Blocks up to ``timeout`` seconds while there are none, waking on a new
        event without a fixed poll. Returns the events (each with its cursor)
        and the cursor to read on from, which is past the events of other
        types that were skipped.
        """

    @abstractmethod
    def last(
        self,
        limit: int = 1,
        *,
        types: frozenset[str] | None = None,
        since: float | None = None,
    ) -> list[Event]:
        """The newest ``limit`` events of ``types``, oldest first.

        ``since`` (Unix seconds): only events that happened then or later; the
        search back through the log stops at events ``CLOCK_SLACK`` seconds
        older than that, so its cost follows the window, not the log's length.
        """

    def job_events(
        self,
        id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = JOB_EVENTS,
    ) -> list[Event]:
        """The retained events of task ``id``, oldest first: its first ``limit``.

        ``since`` is a time no event of the task is older than (when it was sent):
        a backend without a per-task index starts its search there; ``until``, a
        time none is newer than (when it finished), ends it there (both give or
        take ``CLOCK_SLACK``). Backends override this; the default searches the
        newest ``JOB_SCAN`` events.
        """
        return [e for e in self.last(JOB_SCAN) if e.id == id][:limit]

    @abstractmethod
    def cleanup(self) -> int:
        """Delete events past retention; returns how many."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the backend reconnects on next use."""
