"""What a running task knows about itself: ``current_task()``.

A plain function over a ``ContextVar``, not a proxy: it returns a typed
``TaskContext`` inside a task (sync or async) and raises outside one.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from gopherq.errors import Retry, TaskError


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

    @property
    def retries_left(self) -> int:
        """Retries still available after this execution."""
        return max(self.retries - self.attempt, 0)

    def retry(self, countdown: float | None = None, exc: BaseException | None = None) -> Retry:
        """The exception to raise to run this task again.

        ``raise current_task().retry(countdown=5)``; without ``countdown`` the
        task's backoff policy picks the delay. Counts against ``retries``.
        """
        return Retry(countdown=countdown, exc=exc)


_current: ContextVar[TaskContext | None] = ContextVar("gopherq_current_task", default=None)


def current_task() -> TaskContext:
    """The task running in this thread or coroutine; raises ``TaskError`` outside a task."""
    context = _current.get()
    if context is None:
        raise TaskError("current_task() was called outside a running task")
    return context
