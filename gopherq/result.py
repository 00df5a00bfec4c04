"""``AsyncResult``: a handle on a task's outcome by id."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, overload

from gopherq.celery_names import no_attribute
from gopherq.errors import NotSupported, ResultTimeout, TaskFailed
from gopherq.results.base import JobRecord, Progress
from gopherq.states import State

if TYPE_CHECKING:
    from gopherq.app import GopherQ

R = TypeVar("R")

_FAILED_STATES = frozenset({State.FAILED, State.DEAD, State.CANCELLED, State.EXPIRED})


def job_state(app: GopherQ, id: str, record: JobRecord | None) -> State:
    """The state of task ``id`` given its job ``record`` (None if nothing is stored).

    The one rule behind ``AsyncResult.state``, ``gopherq status`` and ``gopherq
    jobs``: a record's state holds unless it is STARTED, which only the broker can
    confirm (a worker that died or stopped leaves its record STARTED while the
    message goes back to the queue); without a record the broker says where the
    message is, and an unknown id is PENDING.
    """
    if record is not None and record.state is not State.STARTED:
        return record.state
    where = located(app, id)
    if where is None and record is None:
        # The job may have finished since ``record`` was read: a worker stores the
        # record before it acks the message, so a message gone means a record written.
        record = app.backend.get(id)
    return where or (record.state if record is not None else State.PENDING)


def located(app: GopherQ, id: str) -> State | None:
    """Where the broker holds message ``id`` (``Broker.locate``); None if it is gone,
    or if the broker cannot say (it implements the hot path alone)."""
    try:
        return app.broker.locate(id)
    except NotSupported:
        return None


def located_many(
    app: GopherQ, ids: Sequence[str], queues: Sequence[str | None] | None = None
) -> list[State | None]:
    """``located`` of each id, asked of the broker at once (``Broker.locate_many``;
    ``queues``: each id's queue where known)."""
    try:
        return app.broker.locate_many(ids, queues)
    except NotSupported:
        return [None] * len(ids)


class _CeleryNames(Generic[R]):
    """Celery's names for what a result shows, shared by ``AsyncResult`` and
    ``EagerResult`` (see docs/celery.md)."""

    __slots__ = ()
    id: str
    app: GopherQ

    def record(self) -> JobRecord | None:
        """The job record (subclasses say where it comes from)."""
        raise NotImplementedError

    @property
    def state(self) -> State:
        """The task's state (subclasses say how it is known)."""
        raise NotImplementedError

    @property
    def task_id(self) -> str:
        """The task id (Celery's name for ``id``)."""
        return self.id

    @property
    def status(self) -> State:
        """Celery's name for ``state``: the same value."""
        return self.state

    @property
    def result(self) -> R | TaskFailed | None:
        """What the task left, without waiting (Celery's ``result``): the return value
        once SUCCEEDED; a ``TaskFailed`` (type, message, traceback) once it failed,
        was dead-lettered, cancelled or expired, or while it waits to retry; None
        otherwise. The exception is described, never rebuilt from stored data."""
        return cast("R | TaskFailed | None", _celery_result(self.id, self.record(), self.app))

    @property
    def traceback(self) -> str | None:
        """The traceback text of the task's last failure, or None."""
        return _traceback(self.record())

    if not TYPE_CHECKING:  # at run time only: mypy must still see unknown attributes

        def __getattr__(self, name: str) -> Any:
            raise no_attribute(self, name, _ATTRIBUTE_HINTS)


class AsyncResult(_CeleryNames[R]):
    """The outcome of one task, looked up in the result backend by id."""

    __slots__ = ("app", "id")

    def __init__(self, id: str, app: GopherQ) -> None:
        self.id = id
        self.app = app

    def record(self) -> JobRecord | None:
        """The stored job record, or None while nothing is stored."""
        return self.app.backend.get(self.id)

    @property
    def state(self) -> State:
        """The current state: from the job record, else from the broker, else PENDING.

        A STARTED record is checked with the broker, which knows when the task
        went back to the queue because its worker died or stopped.
        """
        return job_state(self.app, self.id, self.record())

    @property
    def progress(self) -> Progress | None:
        """The last progress the task reported (``done``, ``total``, ``message``), or None."""
        record = self.record()
        return record.progress if record is not None else None

    def ready(self) -> bool:
        """True once the task has finished, whatever the outcome."""
        return self.state.finished

    def successful(self) -> bool:
        """True if the task succeeded."""
        return self.state is State.SUCCEEDED

    def failed(self) -> bool:
        """True if the task ended without success (failed, dead, cancelled, expired)."""
        return self.state in _FAILED_STATES

    @overload
    def get(self, timeout: float | None = None, propagate: Literal[True] = True) -> R: ...

    @overload
    def get(self, timeout: float | None = None, *, propagate: bool) -> R | TaskFailed: ...

    def get(self, timeout: float | None = None, propagate: bool = True) -> R | TaskFailed:
        """Wait for the outcome and return the task's return value.

        Raises ``ResultTimeout`` after ``timeout`` seconds (None waits forever)
        and, with ``propagate``, ``TaskFailed`` carrying the remote exception
        type, message and traceback; without it the ``TaskFailed`` is returned.
        """
        return cast(
            "R | TaskFailed", _outcome(self.id, self._finished(timeout), self.app, propagate)
        )

    def _finished(self, timeout: float | None) -> JobRecord:
        """Wait for the finished record; ``ResultTimeout`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        record = self.app.backend.wait(self.id, timeout)
        while record is None or not record.state.finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                state = record.state if record else located(self.app, self.id)
                raise ResultTimeout(
                    f"task {self.id} did not finish within {timeout}s "
                    f"(state {(state or State.PENDING).value})"
                )
            record = self.app.backend.wait(self.id, remaining)
        return record

    def cancel(self) -> bool:
        """Cancel the task (see ``GopherQ.cancel``): True if it was queued, scheduled
        or running, False if it had already finished or is unknown."""
        return bool(self.app.cancel([self.id]))

    def forget(self) -> None:
        """Delete the stored record."""
        self.app.backend.delete(self.id)

    # Celery's names (see docs/celery.md; more in _CeleryNames).

    @overload
    def wait(
        self, timeout: float | None = None, propagate: Literal[True] = True, interval: float = 0.5
    ) -> R: ...

    @overload
    def wait(
        self, timeout: float | None = None, *, propagate: bool, interval: float = 0.5
    ) -> R | TaskFailed: ...

    def wait(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> R | TaskFailed:
        """Celery's name for ``get``. ``interval`` is accepted and unused: the wait
        follows the result store's change notifications rather than polling."""
        return self.get(timeout, propagate=propagate)

    def revoke(
        self,
        *,
        terminate: bool = False,
        signal: str | int | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """Celery's name for ``cancel``; returns what ``cancel`` returns.

        ``terminate`` and ``signal`` are accepted and change nothing: a running
        task is always stopped, whatever ``terminate`` says (it sees
        ``current_task().cancelled``, and its process is killed if it has not
        stopped ``cancel_grace`` seconds later). ``wait=True`` waits (up to
        ``timeout`` seconds, else ``ResultTimeout``) until the task has ended.
        """
        cancelled = self.cancel()
        if cancelled and wait:
            self._finished(timeout)
        return cancelled

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class EagerResult(_CeleryNames[R]):
    """The outcome of ``task.apply()``: the task already ran, here, and its record is
    held in memory (no result backend is read or written)."""

    __slots__ = ("_record", "app", "id")

    def __init__(self, id: str, record: JobRecord, app: GopherQ) -> None:
        self.id = id
        self.app = app
        self._record = record

    def record(self) -> JobRecord:
        """The job record the run ended with."""
        return self._record

    @property
    def state(self) -> State:
        """How the run ended: SUCCEEDED, FAILED, DEAD, CANCELLED or EXPIRED."""
        return self._record.state

    def ready(self) -> bool:
        """Always True: the task has run."""
        return True

    def successful(self) -> bool:
        """True if the task succeeded."""
        return self._record.state is State.SUCCEEDED

    def failed(self) -> bool:
        """True if the task ended without success."""
        return self._record.state in _FAILED_STATES

    @overload
    def get(self, timeout: float | None = None, propagate: Literal[True] = True) -> R: ...

    @overload
    def get(self, timeout: float | None = None, *, propagate: bool) -> R | TaskFailed: ...

    def get(self, timeout: float | None = None, propagate: bool = True) -> R | TaskFailed:
        """The return value; with ``propagate``, raises ``TaskFailed`` if the task
        failed, else returns it. ``timeout`` is accepted and unused (nothing to wait for)."""
        return cast("R | TaskFailed", _outcome(self.id, self._record, self.app, propagate))

    wait = get
    """Celery's name for ``get``."""

    def __repr__(self) -> str:
        return f"<EagerResult {self.id} {self._record.state.value}>"


def _outcome(id: str, record: JobRecord, app: GopherQ, propagate: bool) -> Any:
    """The value of a finished record, or its failure (raised with ``propagate``)."""
    if record.state is State.SUCCEEDED:
        return app.codec.unpack(record.result) if record.result else None
    failure = _failure(id, record)
    if propagate:
        raise failure
    return failure


def _failure(id: str, record: JobRecord) -> TaskFailed:
    error = record.error
    if error is None:
        return TaskFailed(id, record.state.value, f"task ended {record.state.value}", "")
    return TaskFailed(id, error.type, error.message, error.traceback)


def _celery_result(id: str, record: JobRecord | None, app: GopherQ) -> Any:
    """Celery's ``AsyncResult.result``: the value, the failure, or None."""
    if record is None:
        return None
    if record.state is State.SUCCEEDED:
        return _outcome(id, record, app, propagate=False)
    if record.state in _FAILED_STATES or (
        record.state is State.RETRYING and record.error is not None
    ):
        return _failure(id, record)
    return None


def _traceback(record: JobRecord | None) -> str | None:
    if record is None or record.error is None:
        return None
    return record.error.traceback or None


# Celery result attributes gopherq lacks, and what it has instead.
_ATTRIBUTE_HINTS = {
    "info": "result (the value or failure) and progress",
    "date_done": "record().finished (unix seconds)",
    "name": "record().task",
    "args": "nothing: arguments are not kept with results",
    "kwargs": "nothing: arguments are not kept with results",
    "children": "nothing: no task tree is kept",
    "parent": "nothing: no task tree is kept",
    "get_leaf": "get()",
    "collect": "get()",
    "then": "nothing: wait with get() or listen to events (app.on)",
    "backend": "app.backend",
    "maybe_throw": "get()",
    "throw": "get()",
    "retries": "record().attempts",
    "worker": "record().worker",
    "queue": "record().queue",
}
