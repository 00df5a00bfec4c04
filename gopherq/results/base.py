"""The job record and the result backend contract.

A job record is what callers learn about a task by id: its state, its result
or error, attempts, timestamps, worker, last progress and checkpoint. The
result value (and a checkpoint's state) travels already
msgpack-encoded (``result`` is bytes), so storing a record never fails on an
unencodable value: the worker finds that out when the task returns. Errors are
stored as type name, message and traceback text; stored data never names a
class to import.
"""

from __future__ import annotations

import base64
import binascii
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from gopherq.brokers.base import Broker, Delivery
from gopherq.errors import DecodeError
from gopherq.message import MAX_ID
from gopherq.redaction import UrlRepr
from gopherq.states import State


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A task's exception, as text."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, traceback: str = "") -> ErrorInfo:
        """Describe ``exc``; pass the formatted traceback when there is one."""
        return cls(type(exc).__name__, str(exc), traceback)


class Progress(NamedTuple):
    """How far a running task says it got: ``current_task().progress(done, total, message)``."""

    done: float
    total: float | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` when the total is known and positive, else None."""
        return self.done / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """Everything stored about one task by id."""

    id: str
    task: str
    state: State
    queue: str = "default"
    result: bytes | None = None
    """The return value, msgpack-encoded by the codec."""
    error: ErrorInfo | None = None
    attempts: int = 0
    """Executions so far, this one included."""
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    progress: Progress | None = None
    """The last progress the task reported."""
    checkpoint: bytes | None = None
    """The last state the task saved with ``checkpoint()``, msgpack-encoded; kept until it
    succeeds."""

    def to_map(self) -> dict[str, Any]:
        """The record as a msgpack-able map."""
        out: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "state": self.state.value,
            "queue": self.queue,
            "attempts": self.attempts,
        }
        for name in ("result", "created", "started", "finished", "worker", "checkpoint"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.error is not None:
            out["error"] = [self.error.type, self.error.message, self.error.traceback]
        if self.progress is not None:
            out["progress"] = list(self.progress)
        return out

    @classmethod
    def from_map(cls, data: Any) -> JobRecord:
        """Rebuild a record from ``to_map`` output; raise ``DecodeError`` if malformed."""
        try:
            error = data.get("error")
            progress = data.get("progress")
            return cls(
                id=data["id"],
                task=data["task"],
                state=State(data["state"]),
                queue=data.get("queue", "default"),
                result=data.get("result"),
                error=ErrorInfo(*error) if error is not None else None,
                attempts=data.get("attempts", 0),
                created=data.get("created"),
                started=data.get("started"),
                finished=data.get("finished"),
                worker=data.get("worker"),
                progress=Progress(*progress) if progress is not None else None,
                checkpoint=data.get("checkpoint"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeError(f"malformed job record: {exc}") from exc


class JobCursor(NamedTuple):
    """A place in the job history's order (newest ``created`` first, then id, descending):
    a page of ``ResultBackend.job_page`` goes on after it.

    ``created`` is the time the backend sorts the record by: its ``created``, or
    where the record has none, the backend's own stand-in (None on SQLite, which
    lists such records last; the first store time on Redis; 0 in memory). A
    cursor is only meaningful to the backend that made it.
    """

    created: float | None
    id: str

    def to_text(self) -> str:
        """The cursor as an opaque URL-safe string (``from_text`` reads it back)."""
        packed = msgpack.packb([self.created, self.id], use_bin_type=True)
        return base64.urlsafe_b64encode(packed).decode().rstrip("=")

    @classmethod
    def from_text(cls, text: str) -> JobCursor:
        """The cursor ``to_text`` wrote; ``ValueError`` for anything else."""
        try:
            data = msgpack.unpackb(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (ValueError, binascii.Error, msgpack.UnpackException):
            raise ValueError("not a cursor of this listing") from None
        match data:
            case [None | float() | int() as created, str() as id] if (
                not isinstance(created, bool)
                and (created is None or math.isfinite(created))
                and 0 < len(id) <= MAX_ID
            ):
                return cls(None if created is None else float(created), id)
        raise ValueError("not a cursor of this listing")


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of the job history (``ResultBackend.job_page``)."""

    records: list[JobRecord] = field(default_factory=list)
    next: JobCursor | None = None
    """Where the next page starts; None when the history has nothing more to look at.
    A page may hold fewer records than asked and still have a ``next`` (a backend
    whose filters search a bounded window of the history: see ``RedisResultBackend``)."""


def sent_within(created: float | None, since: float | None, until: float | None) -> bool:
    """Whether a record sent at ``created`` is within ``since`` (included) and ``until``
    (excluded), each bound where given; a record without ``created`` is within none."""
    if since is None and until is None:
        return True
    return (
        created is not None
        and (since is None or created >= since)
        and (until is None or created < until)
    )


class Settling(NamedTuple):
    """A finished delivery, its record (if any) and whether it is to be acked."""

    delivery: Delivery
    record: JobRecord | None
    ack: bool
    """True: ack it (a success or a cancel); False: renew its lease (the worker
    retries or dead-letters it next)."""


class ResultBackend(UrlRepr, ABC):
    """Stores job records by id; records expire ``expires`` seconds after they finish."""

    url: str

    @abstractmethod
    def store(self, records: Sequence[JobRecord]) -> None:
        """Insert or replace records in one step."""

    @abstractmethod
    def get(self, id: str) -> JobRecord | None:
        """The record of ``id``, or None if unknown or expired."""

    @abstractmethod
    def wait(self, id: str, timeout: float | None) -> JobRecord | None:
        """Block until ``id`` reaches a finished state or ``timeout`` passes.

        Returns the record as it then stands (maybe unfinished, maybe None).
        Waits on a change notification where the store has one, not a fixed poll.
        """

    def jobs(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        queue: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: JobCursor | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Live records, newest first (by ``created``, the time the task was sent),
        optionally only those of one state, task name and queue, sent at ``since``
        or later and before ``until`` (Unix seconds), after the cursor ``after``:
        the job history. The records of ``job_page``."""
        page = self.job_page(
            state=state,
            task=task,
            queue=queue,
            since=since,
            until=until,
            after=after,
            limit=limit,
        )
        return page.records

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
        """Up to ``limit`` records of the job history (see ``jobs``) and the cursor of
        the next page.

        The order is ``created`` descending, then id descending, so that records
        sent in the same instant keep their place between pages. ``since`` and
        ``until`` leave out records without a ``created`` time.

        Backends override this; the base raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list jobs yet")

    @abstractmethod
    def mark(self, key: str, ttl: float) -> None:
        """Set the done-marker ``key`` for ``ttl`` seconds (``gopherq.once``); setting it
        again restarts its time to live. Markers live apart from job records."""

    @abstractmethod
    def marked(self, key: str) -> bool:
        """Whether the done-marker ``key`` is set and has not expired."""

    def store_held(self, broker: Broker, items: Sequence[Settling]) -> set[str] | None:
        """Fenced store and ack, in one atomic step where this is ``broker``'s own store.

        Of ``items``, those whose delivery the broker still holds (token-checked)
        get their record stored and are acked, or have their lease renewed; the
        others are left alone. Returns the held ids. Returns None, having done
        nothing, where this store cannot share a step with ``broker`` (another
        kind, another file or server, a Redis Cluster): the caller then asks
        ``broker.held`` first and stores after (see ``gopherq.worker.settle``).
        """
        return None

    def store_fenced(self, broker: Broker, items: Sequence[Settling]) -> tuple[set[str], bool]:
        """Store the records of the ``items`` whose delivery ``broker`` still holds:
        ``store_held`` where it can, else ``broker.held`` (renewing those leases) and
        then ``store``. Returns the held ids, and whether the held ``ack`` items were
        acked too (only by ``store_held``)."""
        held = self.store_held(broker, items)
        if held is not None:
            return held, True
        held = broker.held([i.delivery for i in items])
        records = [i.record for i in items if i.record is not None and i.delivery.id in held]
        if records:
            self.store(records)
        return held, False

    @abstractmethod
    def delete(self, id: str) -> bool:
        """Forget a record; True if it existed."""

    @abstractmethod
    def cleanup(self) -> int:
        """Delete expired records; returns how many."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the backend reconnects on next use."""
