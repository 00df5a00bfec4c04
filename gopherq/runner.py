"""Running one message: decode, find the task, call it, decide what happens next.

The worker and eager mode share this. It never touches the broker: it returns
an ``Outcome`` (ack, retry after a countdown, or dead-letter with a reason) plus
the job record to store, and the caller settles both, in batches where it can.
A retry carries a countdown, not a time: the broker adds its own clock, so a
worker whose clock is off does not shift the backoff.

Record states after a dead letter tell apart why: ``FAILED`` when the task ran
and failed with no retries left (``MAX_RETRIES``, ``TIME_LIMIT``), ``EXPIRED``
when it was not started in time, ``DEAD`` when it could not run at all
(``DECODE_ERROR``, ``SIGNATURE_INVALID``, ``UNKNOWN_TASK``, ``BAD_ARGS``, ``WORKER_LOST``,
``REJECTED``).

A task that raises ``RateLimited`` has the outcome ``retry`` with
``counts_attempt=False`` and a ``SCHEDULED`` record: its message goes back to run
after ``retry_after`` seconds, its attempt not counted (event ``task-retried``).

A cancelled task is not a dead letter: its outcome is ``cancel`` (settled like
an ack) with a ``CANCELLED`` record, whether it was cancelled before it started
or while it ran, however it then returned.
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gopherq.brokers.base import Delivery
from gopherq.context import TaskContext, _current
from gopherq.errors import (
    DecodeError,
    NotRegistered,
    RateLimited,
    Reject,
    Retry,
    SignatureError,
    SoftTimeLimitExceeded,
    TaskCancelled,
    TaskExpired,
    TimeLimitExceeded,
    WorkerLost,
)
from gopherq.message import Message
from gopherq.results.base import ErrorInfo, JobRecord
from gopherq.states import DeadReason, State
from gopherq.tracker import JobTracker, StoreBackoff, never_cancelled

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.task import BaseTask

Action = Literal["ack", "retry", "dead", "cancel"]

_RECORD_STATE = {
    DeadReason.MAX_RETRIES: State.FAILED,
    DeadReason.TIME_LIMIT: State.FAILED,
    DeadReason.EXPIRED: State.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a delivery after running it, and the record to store.

    ``ack`` and ``cancel`` both settle with ``Broker.ack``.
    """

    action: Action
    """``ack`` (success), ``retry``, ``dead`` (dead-lettered) or ``cancel``."""
    record: JobRecord | None
    """The job record stored for the run, if any (a task that stores no results has none)."""
    countdown: float = 0.0
    """For ``retry``: seconds from now (the broker's clock) until the next attempt."""
    counts_attempt: bool = True
    """For ``retry``: False when the task raised ``RateLimited``: the message goes back
    (``Broker.defer``) without using a retry."""
    reason: DeadReason | None = None
    """For ``dead``: why."""
    error: str = ""
    """For ``retry``, ``dead`` and ``cancel``: the error as one line of text."""


_ACK = Outcome("ack", None)
"""A success with no record to store, the commonest outcome (immutable: built once)."""


class Runner:
    """Runs deliveries of one app's tasks and returns their outcomes.

    ``cancelled(id)`` tells whether a cancel of a task was requested (the
    worker's supervisor learns it from the broker); it is asked before a task
    starts, by ``current_task().cancelled``, and once the task returns.
    ``fenced`` (a worker's runner): the records a task stores while it runs
    (STARTED, progress, checkpoints) are stored only while its delivery is held
    (see ``gopherq.tracker``).
    """

    def __init__(
        self,
        app: GopherQ,
        worker: str | None = None,
        cancelled: Callable[[str], bool] = never_cancelled,
        *,
        fenced: bool = False,
    ) -> None:
        self.app = app
        self.worker = worker
        self.cancelled = cancelled
        self.fenced = fenced
        self.max_deliveries = app.settings.max_deliveries
        self._store_backoff = StoreBackoff()  # shared by this runner's runs
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(
        self, delivery: Delivery, message: Message | None = None, *, announce: bool = False
    ) -> Outcome:
        """Run one delivery to its outcome. Exceptions of the task never escape.

        ``message`` is the body already decoded, when the caller decoded it.
        ``announce`` makes the start visible at once (a STARTED record and the
        buffered events), for a task that may run long.
        """
        started = time.time()
        failure: tuple[DeadReason, BaseException] | None = None
        if message is None:
            try:
                message = self.app.codec.decode(delivery.body)
            except DecodeError as exc:
                message = Message(id=delivery.id, task="?", queue=delivery.queue, created=started)
                signed = isinstance(exc, SignatureError)  # signing on, signature wrong
                reason = DeadReason.SIGNATURE_INVALID if signed else DeadReason.DECODE_ERROR
                failure = (reason, exc)
        task = self.app.tasks.get(message.task)
        if failure is None:
            failure = self._cannot_run(delivery, message, started)
        tracker = JobTracker(
            self.app,
            created=message.created or None,
            started=started,
            rerun=delivery.attempt > 0 or delivery.deliveries > 1,
            keep=task is not None and not task.options.ignore_result,
            cancelled=self.cancelled,
            backoff=self._store_backoff,
            delivery=delivery if self.fenced else None,
        )
        context = TaskContext(
            id=message.id,
            name=message.task,
            queue=message.queue,
            attempt=delivery.attempt,
            retries=_retries(task, message.retries),
            worker=self.worker,
            control=tracker,
        )
        if delivery.cancelled or self.cancelled(delivery.id):
            outcome = self._cancel(context, tracker, "cancelled before it started")
        elif failure is None and task is not None:
            outcome = self._execute(task, message, context, tracker, announce)
            if self.cancelled(delivery.id):
                outcome = self._cancel(context, tracker, "cancelled while running")
        else:  # (an unknown task always comes with its failure)
            reason, error = failure or (DeadReason.UNKNOWN_TASK, NotRegistered(message.task))
            outcome = self._dead(context, tracker, reason, error)
        if self.app.middleware:
            runtime = time.time() - started
            self.app.middleware.after_execute(self.app, message, context, outcome, runtime)
        return outcome

    def _cannot_run(
        self, delivery: Delivery, message: Message, now: float
    ) -> tuple[DeadReason, BaseException] | None:
        """Why a decoded message must not run (before its arguments are checked), or None."""
        if delivery.deliveries > self.max_deliveries:
            error = WorkerLost(
                f"its worker died {delivery.deliveries - 1} times running it "
                f"(max_deliveries={self.max_deliveries})"
            )
            return DeadReason.WORKER_LOST, error
        if message.expires is not None and now > message.expires:
            return DeadReason.EXPIRED, TaskExpired("not started before it expired")
        try:
            self.app.get_task(message.task)
        except NotRegistered as exc:
            return DeadReason.UNKNOWN_TASK, exc
        return None

    def _execute(
        self,
        task: BaseTask[Any, Any],
        message: Message,
        context: TaskContext,
        tracker: JobTracker,
        announce: bool,
    ) -> Outcome:
        try:
            task.check_arguments(message.args, message.kwargs)
        except TypeError as exc:
            return self._dead(context, tracker, DeadReason.BAD_ARGS, exc)
        if self.app.middleware:
            self.app.middleware.before_execute(self.app, message, context)
        if announce:
            tracker.announce(context)
        token = _current.set(context)
        try:
            with _soft_time_limit(task.options.soft_timeout):
                value = self._call(task, message)
            result = self.app.codec.pack(value, what="result")
        except Reject as exc:
            return self._dead(context, tracker, DeadReason.REJECTED, exc)
        except RateLimited as exc:
            record = tracker.record(context, State.SCHEDULED, error=_error_info(exc))
            error = _one_line(exc)
            return Outcome("retry", record, exc.retry_after, counts_attempt=False, error=error)
        except Retry as exc:
            countdown = exc.countdown
            return self._failure(
                task, context, tracker, exc.exc or exc, countdown=countdown, requested=True
            )
        except Exception as exc:  # SerializationError of the result included
            return self._failure(task, context, tracker, exc, countdown=None, requested=False)
        finally:
            _current.reset(token)
        if task.options.ignore_result and not tracker.wrote:
            return _ACK
        return Outcome("ack", tracker.record(context, State.SUCCEEDED, result=result))

    def killed(
        self, delivery: Delivery, *, task_name: str, retries: int | None, error: str
    ) -> Outcome:
        """The outcome for a task whose process was killed by its hard time limit.

        Runs the ``after_execute`` hooks; the record keeps the progress and
        checkpoint the killed process stored.
        """
        message, context, tracker = self._after_kill(delivery, task_name, retries)
        exc = TimeLimitExceeded(error)
        task = self.app.tasks.get(task_name)
        if task is not None and delivery.attempt < context.retries:
            countdown = task.options.retry_delay_for(delivery.attempt)
            info = _error_info(exc)
            record = tracker.record(context, State.RETRYING, error=info)
            outcome = Outcome("retry", record, countdown=countdown, error=_one_line(exc))
        else:
            outcome = self._dead(context, tracker, DeadReason.TIME_LIMIT, exc)
        if self.app.middleware:
            self.app.middleware.after_execute(self.app, message, context, outcome, 0.0)
        return outcome

    def stopped(self, delivery: Delivery, *, task_name: str, retries: int | None) -> Outcome:
        """The outcome for a cancelled task whose process was killed when it did not
        stop within the grace period; runs the ``after_execute`` hooks."""
        message, context, tracker = self._after_kill(delivery, task_name, retries)
        outcome = self._cancel(context, tracker, "cancelled while running; its process was killed")
        if self.app.middleware:
            self.app.middleware.after_execute(self.app, message, context, outcome, 0.0)
        return outcome

    def _after_kill(
        self, delivery: Delivery, task_name: str, retries: int | None
    ) -> tuple[Message, TaskContext, JobTracker]:
        """What the outcome of a killed process's task is built from (its body is gone)."""
        message = Message(id=delivery.id, task=task_name, queue=delivery.queue, retries=retries)
        tracker = JobTracker(self.app, created=None, started=time.time(), rerun=True, keep=True)
        context = TaskContext(
            id=delivery.id,
            name=task_name,
            queue=delivery.queue,
            attempt=delivery.attempt,
            retries=_retries(self.app.tasks.get(task_name), retries),
            worker=self.worker,
            control=tracker,
        )
        return message, context, tracker

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
        task: BaseTask[Any, Any],
        context: TaskContext,
        tracker: JobTracker,
        exc: BaseException,
        *,
        countdown: float | None,
        requested: bool,
    ) -> Outcome:
        """Retry if asked to (``requested``) or if ``exc`` is retryable, while retries last."""
        if (requested or task.options.should_retry(exc)) and context.retries_left > 0:
            if countdown is None or not math.isfinite(countdown):
                countdown = task.options.retry_delay_for(context.attempt)
            record = tracker.record(context, State.RETRYING, error=_error_info(exc))
            return Outcome("retry", record, countdown=countdown, error=_one_line(exc))
        return self._dead(context, tracker, DeadReason.MAX_RETRIES, exc)

    def _cancel(self, context: TaskContext, tracker: JobTracker, why: str) -> Outcome:
        exc = TaskCancelled(why)
        record = tracker.record(context, State.CANCELLED, error=_error_info(exc))
        return Outcome("cancel", record, error=_one_line(exc))

    def _dead(
        self, context: TaskContext, tracker: JobTracker, reason: DeadReason, exc: BaseException
    ) -> Outcome:
        state = _RECORD_STATE.get(reason, State.DEAD)
        record = tracker.record(context, state, error=_error_info(exc))
        return Outcome("dead", record, reason=reason, error=_one_line(exc))


def _retries(task: BaseTask[Any, Any] | None, override: int | None) -> int:
    """Retries allowed: the message's override, else the task's option (0 if unknown)."""
    if override is not None:
        return override
    return task.options.retries if task is not None else 0


def _error_info(exc: BaseException) -> ErrorInfo:
    text = "".join(traceback.format_exception(exc)) if exc.__traceback__ else ""
    return ErrorInfo.from_exception(exc, text)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__


_NO_LIMIT = nullcontext()


def _soft_time_limit(seconds: float | None) -> AbstractContextManager[None]:
    """Raise ``SoftTimeLimitExceeded`` in the task after ``seconds`` (main thread only)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        return _NO_LIMIT
    return _alarm(seconds)


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
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
    run_inline(app, message, store=lambda record: app.backend.store([record]))
    return message.id


def run_inline(
    app: GopherQ, message: Message, *, store: Callable[[JobRecord], None] | None = None
) -> JobRecord:
    """Run a message here, through the codec, retrying at once; the record it ended with.

    Each record the runs produce goes to ``store`` when given (eager mode stores
    them in the result backend; ``task.apply()`` keeps only the last). An
    ``ignore_result`` task that succeeds leaves no record: a SUCCEEDED one
    without a value stands for it.
    """
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
            if outcome.record is not None and store is not None:
                store(outcome.record)
            app.events.flush()
            # Not waited for here: the record of a RateLimited run says SCHEDULED.
            if outcome.action != "retry" or not outcome.counts_attempt:
                return outcome.record or JobRecord(
                    id=message.id,
                    task=message.task,
                    state=State.SUCCEEDED,
                    queue=message.queue,
                    attempts=attempt + 1,
                )
            attempt += 1
    finally:
        runner.close()
