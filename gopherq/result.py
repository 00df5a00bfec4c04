"""``AsyncResult``: a handle on a task's outcome by id."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from gopherq.errors import ResultTimeout, TaskFailed
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
    located = app.broker.locate(id)
    return located or (record.state if record is not None else State.PENDING)


class AsyncResult(Generic[R]):
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
        deadline = None if timeout is None else time.monotonic() + timeout
        record = self.app.backend.wait(self.id, timeout)
        while record is None or not record.state.finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                state = record.state if record else self.app.broker.locate(self.id)
                raise ResultTimeout(
                    f"task {self.id} did not finish within {timeout}s "
                    f"(state {(state or State.PENDING).value})"
                )
            record = self.app.backend.wait(self.id, remaining)
        if record.state is State.SUCCEEDED:
            value: R = self.app.codec.unpack(record.result) if record.result else None  # type: ignore[assignment]
            return value
        error = record.error
        failure = TaskFailed(
            self.id,
            error.type if error else record.state.value,
            error.message if error else f"task ended {record.state.value}",
            error.traceback if error else "",
        )
        if propagate:
            raise failure
        return failure

    def cancel(self) -> bool:
        """Cancel the task (see ``GopherQ.cancel``): True if it was queued, scheduled
        or running, False if it had already finished or is unknown."""
        return bool(self.app.cancel([self.id]))

    def forget(self) -> None:
        """Delete the stored record."""
        self.app.backend.delete(self.id)

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)
