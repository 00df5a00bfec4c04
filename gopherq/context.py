"""What a running task knows about itself: ``current_task()``.

A plain function over a ``ContextVar``, not a proxy: it returns a typed
``TaskContext`` inside a task (sync or async) and raises outside one.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from gopherq.celery_names import no_attribute
from gopherq.errors import Retry, TaskError
from gopherq.results.base import Progress, ResultBackend


class JobControl(Protocol):
    """What stores a running task's progress and checkpoints (the worker's ``JobTracker``)."""

    def progress(self, context: TaskContext, progress: Progress) -> None:
        """Record ``progress`` of the task ``context`` runs."""

    def checkpoint(self, context: TaskContext, state: Any) -> None:
        """Store ``state`` durably with the job, now."""

    def checkpoint_state(self, context: TaskContext) -> Any:
        """The last state stored with ``checkpoint``, by this run or an earlier one."""

    def cancelled(self, context: TaskContext) -> bool:
        """Whether a cancel of the task was requested."""

    def result_backend(self) -> ResultBackend:
        """The running app's result store."""


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The running task's identity and controls."""

    id: str
    name: str
    queue: str
    attempt: int
    """Executions before this one (0 on the first run)."""
    retries: int
    """Retries allowed in all."""
    worker: str | None = None
    control: JobControl | None = field(default=None, repr=False, compare=False)
    """Stores progress and checkpoints; set by the runner."""

    @property
    def retries_left(self) -> int:
        """Retries still available after this execution."""
        return max(self.retries - self.attempt, 0)

    def retry(self, countdown: float | None = None, exc: BaseException | None = None) -> NoReturn:
        """Run this task again: raises ``Retry``.

        ``raise current_task().retry(countdown=5)`` (the ``raise`` reads well and
        keeps type checkers aware that the task stops here; ``retry()`` raises by
        itself, as Celery's ``self.retry()`` does). Without ``countdown`` the
        task's backoff policy picks the delay. Counts against ``retries``.
        """
        raise Retry(countdown=countdown, exc=exc)

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far the task got: ``progress(3, 10, "resizing")``.

        Stored on the job record (``AsyncResult.progress``) and sent as a
        ``task-progress`` event; calls closer together than 0.1 s are folded
        into the next one (the last one always reaches the final record).
        """
        self._control().progress(self, Progress(done, total, message))

    def checkpoint(self, state: Any) -> None:
        """Store ``state`` (msgpack-able) with the job, durably, before returning.

        When the task runs again (a retry, or a redelivery after its worker
        died), ``checkpoint_state`` returns it, so that it resumes where it was.
        """
        self._control().checkpoint(self, state)

    @property
    def checkpoint_state(self) -> Any:
        """The last state stored with ``checkpoint()`` for this task id, or None."""
        return self._control().checkpoint_state(self)

    @property
    def cancelled(self) -> bool:
        """True once ``AsyncResult.cancel()`` (or ``gopherq cancel``) asked this task to stop.

        A long task checks it between steps and returns (or raises) to stop
        cleanly; either way it ends ``CANCELLED``. One that does not stop within
        the worker's ``cancel_grace`` seconds has its process killed. Reading it
        costs no I/O: the worker's supervisor polls the broker and tells the
        process through shared memory (about twice a second).
        """
        return self._control().cancelled(self)

    @property
    def result_backend(self) -> ResultBackend:
        """The result store of the app running this task (``gopherq.once`` uses it)."""
        return self._control().result_backend()

    if not TYPE_CHECKING:  # at run time only: mypy must still see unknown attributes

        def __getattr__(self, name: str) -> Any:
            raise no_attribute(self, name, _CELERY_HINTS)

    def _control(self) -> JobControl:
        if self.control is None:
            raise TaskError(f"task {self.id} has no job control (built outside a runner)")
        return self.control


# What Celery's bound task (``self`` with bind=True) offers that the context names otherwise.
_CELERY_HINTS = {
    "request": "the context itself: .id, .name, .queue, .attempt (Celery's "
    "request.retries), .retries (Celery's max_retries), .worker",
    "max_retries": "retries",
    "update_state": "progress(done, total, message)",
    "send_event": "progress(), or app.events.publish()",
    "apply_async": "the task object's apply_async",
    "delay": "the task object's delay",
}

_current: ContextVar[TaskContext | None] = ContextVar("gopherq_current_task", default=None)


def current_task() -> TaskContext:
    """The task running in this thread or coroutine; raises ``TaskError`` outside a task."""
    context = _current.get()
    if context is None:
        raise TaskError("current_task() was called outside a running task")
    return context
