"""Running one message: decode, find the task, call it, decide what happens next.

The worker and eager mode share this. It never touches the broker: it returns
an ``Outcome`` (ack, retry at a time, or dead-letter with a reason) plus the job
record to store, and the caller settles both, in batches where it can.

Record states after a dead letter tell apart why: ``FAILED`` when the task ran
and failed with no retries left (``MAX_RETRIES``, ``TIME_LIMIT``), ``EXPIRED``
when it was not started in time, ``DEAD`` when it could not run at all
(``DECODE_ERROR``, ``UNKNOWN_TASK``, ``BAD_ARGS``, ``WORKER_LOST``, ``REJECTED``).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gopherq.brokers.base import Delivery
from gopherq.context import TaskContext, _current
from gopherq.errors import (
    DecodeError,
    NotRegistered,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from gopherq.message import Message
from gopherq.results.base import ErrorInfo, JobRecord
from gopherq.states import DeadReason, State

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.task import BaseTask

Action = Literal["ack", "retry", "dead"]

_RECORD_STATE = {
    DeadReason.MAX_RETRIES: State.FAILED,
    DeadReason.TIME_LIMIT: State.FAILED,
    DeadReason.EXPIRED: State.EXPIRED,
    DeadReason.CANCELLED: State.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a delivery after running it, and the record to store."""

    action: Action
    record: JobRecord | None
    eta: float = 0.0
    """For ``retry``: unix seconds of the next attempt."""
    reason: DeadReason | None = None
    """For ``dead``: why."""
    error: str = ""
    """For ``retry`` and ``dead``: the error as one line of text."""


class Runner:
    """Runs deliveries of one app's tasks and returns their outcomes."""

    def __init__(self, app: GopherQ, worker: str | None = None) -> None:
        self.app = app
        self.worker = worker
        self.max_deliveries = app.settings.max_deliveries
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, delivery: Delivery, message: Message | None = None) -> Outcome:
        """Run one delivery to its outcome. Exceptions of the task never escape.

        ``message`` is the body already decoded, when the caller decoded it.
        """
        started = time.time()
        try:
            if message is None:
                message = self.app.codec.decode(delivery.body)
        except DecodeError as exc:
            placeholder = Message(id=delivery.id, task="?", queue=delivery.queue, created=started)
            return self._dead(placeholder, delivery, DeadReason.DECODE_ERROR, exc, started)
        if delivery.deliveries > self.max_deliveries:
            error = RuntimeError(
                f"its worker died {delivery.deliveries - 1} times running it "
                f"(max_deliveries={self.max_deliveries})"
            )
            return self._dead(message, delivery, DeadReason.WORKER_LOST, error, started)
        if message.expires is not None and started > message.expires:
            error = RuntimeError("not started before it expired")
            return self._dead(message, delivery, DeadReason.EXPIRED, error, started)
        try:
            task = self.app.get_task(message.task)
        except NotRegistered as exc:
            return self._dead(message, delivery, DeadReason.UNKNOWN_TASK, exc, started)
        try:
            task.signature.bind(*message.args, **message.kwargs)
        except TypeError as exc:
            return self._dead(message, delivery, DeadReason.BAD_ARGS, exc, started)
        retries = task.options.retries if message.retries is None else message.retries
        context = TaskContext(
            id=message.id,
            name=task.name,
            queue=message.queue,
            attempt=delivery.attempt,
            retries=retries,
            worker=self.worker,
        )
        token = _current.set(context)
        try:
            with _soft_time_limit(task.options.soft_timeout):
                value = self._call(task, message)
            result = self.app.codec.pack(value, what="result")
        except Reject as exc:
            return self._dead(message, delivery, DeadReason.REJECTED, exc, started)
        except Retry as exc:
            return self._failure(
                task=task,
                message=message,
                delivery=delivery,
                exc=exc.exc or exc,
                started=started,
                countdown=exc.countdown,
                requested=True,
            )
        except Exception as exc:  # SerializationError of the result included
            return self._failure(
                task=task,
                message=message,
                delivery=delivery,
                exc=exc,
                started=started,
                countdown=None,
            )
        finally:
            _current.reset(token)
        record = None
        if not task.options.ignore_result:
            record = self._record(message, delivery, State.SUCCEEDED, started, result=result)
        return Outcome("ack", record)

    def killed(
        self, delivery: Delivery, *, task_name: str, retries: int | None, error: str
    ) -> Outcome:
        """The outcome for a task whose process was killed by its hard time limit."""
        now = time.time()
        message = Message(id=delivery.id, task=task_name, queue=delivery.queue, retries=retries)
        exc = TimeLimitExceeded(error)
        task = self.app.tasks.get(task_name)
        limit = retries if retries is not None else (task.options.retries if task else 0)
        if task is not None and delivery.attempt < limit:
            eta = now + task.options.retry_delay_for(delivery.attempt)
            record = self._record(message, delivery, State.RETRYING, now, error=_error_info(exc))
            return Outcome("retry", record, eta=eta, error=_one_line(exc))
        return self._dead(message, delivery, DeadReason.TIME_LIMIT, exc, now)

    def close(self) -> None:
        """Close the event loop used for ``async def`` tasks."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _call(self, task: BaseTask[Any, Any], message: Message) -> Any:
        if not task.is_async:
            return task.fn(*message.args, **message.kwargs)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(task.fn(*message.args, **message.kwargs))

    def _failure(
        self,
        *,
        task: BaseTask[Any, Any],
        message: Message,
        delivery: Delivery,
        exc: BaseException,
        started: float,
        countdown: float | None = None,
        requested: bool = False,
    ) -> Outcome:
        """Retry if asked to (``requested``) or if ``exc`` is retryable, while retries last."""
        retries = task.options.retries if message.retries is None else message.retries
        retryable = requested or task.options.should_retry(exc)
        if retryable and delivery.attempt < retries:
            delay = (
                task.options.retry_delay_for(delivery.attempt) if countdown is None else countdown
            )
            info = _error_info(exc)
            record = self._record(message, delivery, State.RETRYING, started, error=info)
            return Outcome("retry", record, eta=time.time() + delay, error=_one_line(exc))
        return self._dead(message, delivery, DeadReason.MAX_RETRIES, exc, started)

    def _dead(
        self,
        message: Message,
        delivery: Delivery,
        reason: DeadReason,
        exc: BaseException,
        started: float,
    ) -> Outcome:
        state = _RECORD_STATE.get(reason, State.DEAD)
        record = self._record(message, delivery, state, started, error=_error_info(exc))
        return Outcome("dead", record, reason=reason, error=_one_line(exc))

    def _record(
        self,
        message: Message,
        delivery: Delivery,
        state: State,
        started: float,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
    ) -> JobRecord:
        return JobRecord(
            id=message.id,
            task=message.task,
            state=state,
            queue=message.queue,
            result=result,
            error=error,
            attempts=delivery.attempt + 1,
            created=message.created or None,
            started=started,
            finished=time.time(),
            worker=self.worker,
        )


def _error_info(exc: BaseException) -> ErrorInfo:
    text = "".join(traceback.format_exception(exc)) if exc.__traceback__ else ""
    return ErrorInfo.from_exception(exc, text)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__


@contextmanager
def _soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` in the task after ``seconds`` (main thread only)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit of {seconds}s exceeded")

    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_eagerly(app: GopherQ, message: Message) -> str:
    """Run a message inline, through the codec, retrying at once; store its record."""
    body = app.codec.encode(message)
    runner = Runner(app, worker="eager")
    attempt = 0
    try:
        while True:
            delivery = Delivery(
                id=message.id,
                queue=message.queue,
                priority=message.priority,
                body=body,
                attempt=attempt,
                deliveries=1,
                token="eager",
            )
            outcome = runner.run(delivery)
            if outcome.record is not None:
                app.backend.store([outcome.record])
            if outcome.action != "retry":
                return message.id
            attempt += 1
    finally:
        runner.close()
