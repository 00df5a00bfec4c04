"""The event emitter: middleware that turns hook calls into events.

Installed by the app while events are on. Task events are buffered in
``app.events`` and published with the next flush (the consumer flushes with
each settle; a task that may run long, or reports progress, flushes at once);
enqueue and worker events are published at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gopherq.context import TaskContext
from gopherq.errors import WorkerLost
from gopherq.events.base import NO_EXTRA, Event, EventType
from gopherq.events.hub import Events
from gopherq.message import Message
from gopherq.middleware import Middleware, WorkerInfo, WorkerStats
from gopherq.results.base import Progress
from gopherq.states import DeadReason, State

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.runner import Outcome

_DEAD_TYPES = {
    DeadReason.MAX_RETRIES: EventType.TASK_FAILED,
    DeadReason.TIME_LIMIT: EventType.TASK_FAILED,
    DeadReason.EXPIRED: EventType.TASK_EXPIRED,
}


class EventEmitter(Middleware):
    """Emits the lifecycle events of tasks and workers into ``events``."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self._started: dict[str, float] = {}
        """When each worker of this process sent ``worker-online``, by name."""

    def after_enqueue(self, app: GopherQ, messages: Sequence[Message], ids: Sequence[str]) -> None:
        """``task-enqueued`` or ``task-scheduled`` (with ``eta``) per message stored."""
        now = time.time()
        events = []
        for message, id in zip(messages, ids, strict=True):
            if id != message.id:
                continue  # an idempotency key found the first message: nothing was stored
            extra: dict[str, Any] = {"priority": message.priority}
            kind = EventType.TASK_ENQUEUED
            if message.eta is not None:
                kind = EventType.TASK_SCHEDULED
                extra["eta"] = message.eta
            events.append(Event(kind, now, id, message.task, message.queue, None, 0, extra))
        self.events.publish(events)

    def before_execute(self, app: GopherQ, message: Message, context: TaskContext) -> None:
        """``task-started``."""
        self.events.emit(_task_event(EventType.TASK_STARTED, context))

    def after_execute(
        self,
        app: GopherQ,
        message: Message,
        context: TaskContext,
        outcome: Outcome,
        runtime: float,
    ) -> None:
        """``task-succeeded``, ``-retried``, ``-failed``, ``-dead``, ``-expired`` or
        ``-cancelled``, as the outcome says."""
        extra: dict[str, Any] = {"runtime": runtime}
        if outcome.action == "ack":
            self.events.emit(_task_event(EventType.TASK_SUCCEEDED, context, extra))
            return
        error = outcome.record.error if outcome.record else None
        if error is not None:
            extra["error_type"], extra["error"] = error.type, error.message
        else:
            extra["error"] = outcome.error
        if outcome.action == "cancel":
            kind = EventType.TASK_CANCELLED
            extra["was"] = State.STARTED.value
        elif outcome.action == "retry":
            kind = EventType.TASK_RETRIED
            # An estimate by this worker's clock (the broker's decides when it runs).
            extra["eta"] = time.time() + outcome.countdown
            if not outcome.counts_attempt:
                extra["rate_limited"] = True
        else:
            reason = outcome.reason or DeadReason.REJECTED
            kind = _DEAD_TYPES.get(reason, EventType.TASK_DEAD)
            extra["reason"] = reason.value
        self.events.emit(_task_event(kind, context, extra))

    def on_cancel(self, app: GopherQ, message: Message, was: State, attempt: int) -> None:
        """``task-cancelled`` with ``was`` (``QUEUED`` or ``SCHEDULED``)."""
        kind, now, extra = EventType.TASK_CANCELLED, time.time(), {"was": was.value}
        event = Event(kind, now, message.id, message.task, message.queue, None, attempt, extra)
        self.events.publish([event])

    def on_progress(self, app: GopherQ, context: TaskContext, progress: Progress) -> None:
        """``task-progress`` with ``done``, ``total`` and ``message``."""
        extra = {"done": progress.done, "total": progress.total, "message": progress.message}
        self.events.emit(_task_event(EventType.TASK_PROGRESS, context, extra))

    def on_lost(self, app: GopherQ, message: Message, worker: str, error: str) -> None:
        """``task-retried`` with reason ``WORKER_LOST``: it is redelivered at once."""
        now = time.time()
        extra = {
            "error_type": WorkerLost.__name__,
            "error": error,
            "eta": now,
            "reason": "WORKER_LOST",
        }
        event = Event(
            EventType.TASK_RETRIED,
            now,
            message.id,
            message.task,
            message.queue,
            worker,
            message.attempt,
            extra,
        )
        self.events.publish([event])

    def worker_start(self, app: GopherQ, worker: WorkerInfo) -> None:
        """``worker-online`` with hostname, pid, concurrency and queues."""
        self._started[worker.name] = now = time.time()
        self._worker_event(EventType.WORKER_ONLINE, worker, _identity(worker), now)

    def worker_heartbeat(self, app: GopherQ, worker: WorkerInfo, stats: WorkerStats) -> None:
        """``worker-heartbeat`` with its processes, active and processed counts, load, and
        the tasks running now; also what ``worker-online`` said and when, so that a
        reader of recent events alone knows the worker."""
        extra = {
            **_identity(worker),
            "started": self._started.get(worker.name),
            "processes": list(stats.processes),
            "active": stats.active,
            "processed": stats.processed,
            "load": list(stats.load),
            "running": [
                {"process": process, "id": id, "task": task} for process, id, task in stats.running
            ],
        }
        self._worker_event(EventType.WORKER_HEARTBEAT, worker, extra)

    def worker_stop(self, app: GopherQ, worker: WorkerInfo) -> None:
        """``worker-offline``."""
        self._started.pop(worker.name, None)
        self._worker_event(EventType.WORKER_OFFLINE, worker, {})

    def _worker_event(
        self, kind: EventType, worker: WorkerInfo, extra: dict[str, Any], now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        self.events.publish([Event(kind, now, worker=worker.name, extra=extra)])


def _identity(worker: WorkerInfo) -> dict[str, Any]:
    """Hostname, pid, concurrency and queues of a worker, as event fields."""
    return {
        "hostname": worker.hostname,
        "pid": worker.pid,
        "concurrency": worker.concurrency,
        "queues": list(worker.queues),
    }


def _task_event(
    kind: EventType, context: TaskContext, extra: Mapping[str, Any] = NO_EXTRA
) -> Event:
    return Event(
        kind,
        time.time(),
        context.id,
        context.name,
        context.queue,
        context.worker,
        context.attempt,
        extra,
    )
