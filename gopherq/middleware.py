"""Middleware: typed hooks around sending and running tasks.

Subclass ``Middleware`` and override the hooks you need; each is a no-op by
default. Install with ``GopherQ(..., middleware=[...])`` or
``app.add_middleware(mw)``. The event emitter is one (installed while events
are on); metrics and tracing fit the same hooks::

    from gopherq import GopherQ, Message, Middleware, Outcome, TaskContext

    class Timing(Middleware):
        def after_execute(
            self,
            app: GopherQ,
            message: Message,
            context: TaskContext,
            outcome: Outcome,
            runtime: float,
        ) -> None:
            histogram.labels(message.task, outcome.action).observe(runtime)

Every type a hook's signature names is exported by ``gopherq`` (and by this
module): ``GopherQ``, ``Message``, ``TaskContext``, ``Outcome``, ``Progress``,
``State``, ``WorkerInfo`` and ``WorkerStats``.

Where they run:

===========================  ==================================================
hook                         called
===========================  ==================================================
``before_enqueue``           by ``send_many`` before the broker call; raising vetoes
                             the whole batch (the error reaches the caller)
``after_enqueue``            after the broker call, with the ids it returned (a live
                             idempotency key returns the first id, not the message's)
``on_enqueue_error``         instead of ``after_enqueue`` when the batch was not sent
                             (a ``before_enqueue`` hook refused it, or the broker failed)
``before_execute``           in the worker process, before the task function runs
``after_execute``            after every run: success, retry, dead letter or cancel,
                             as the ``Outcome`` says; also for a task killed by its
                             hard time limit or after a cancel (in the supervisor)
                             and one that could not run
``on_retry``                 after ``after_execute``, for a retry outcome
``on_dead``                  after ``after_execute``, for a dead-letter outcome
``on_cancel``                in the cancelling process, when a queued or scheduled
                             message was cancelled (it never reaches a worker)
``on_progress``              when the task reports progress
``on_lost``                  in the supervisor, when a process died running the task
                             (it is redelivered, or dead-lettered ``WORKER_LOST``)
``worker_process_init``      in each worker process (and the ``-B`` beat process)
                             right after the fork, before it takes any task: where
                             per-process clients start (an OpenTelemetry TracerProvider)
``worker_process_shutdown``  in each worker process as it exits (not when killed)
``worker_start``             in the supervisor, once its processes are up
``worker_heartbeat``         in the supervisor, every ``worker_heartbeat`` seconds
``worker_stop``              in the supervisor, after a graceful stop
===========================  ==================================================

"before" hooks run in the order the middleware was added, "after" hooks (and
the others) in reverse, so that the first middleware wraps all the others. An
exception in any hook but ``before_enqueue`` is logged and the work goes on: a
broken metrics exporter must not fail tasks. Hooks are methods called by
name in code, never looked up by string, so that mypy checks every override.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gopherq.context import TaskContext
from gopherq.message import Message
from gopherq.results.base import Progress
from gopherq.runner import Outcome
from gopherq.states import State

if TYPE_CHECKING:
    from gopherq.app import GopherQ

__all__ = [
    "Message",
    "Middleware",
    "MiddlewareStack",
    "Outcome",
    "Progress",
    "State",
    "TaskContext",
    "WorkerInfo",
    "WorkerStats",
]

logger = logging.getLogger("gopherq.middleware")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker (supervisor) as middleware sees it."""

    name: str
    """``hostname:pid`` of the supervisor."""
    hostname: str
    pid: int
    concurrency: int
    queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """A worker's counts and load, for heartbeats."""

    processes: tuple[str, ...]
    """Names (``hostname:pid``) of the live processes, as task events show them."""
    active: int
    """Tasks running now."""
    processed: int
    """Tasks run since the worker started."""
    load: tuple[float, float, float]
    """The machine's load averages over 1, 5 and 15 minutes."""
    running: tuple[tuple[str, str, str], ...] = ()
    """``(process, task id, task name)`` of each task running now."""


class Middleware:
    """Hooks around sending and running tasks; every one is a no-op here."""

    def before_enqueue(self, app: GopherQ, messages: Sequence[Message]) -> None:
        """Messages are about to be sent; raise to refuse the batch."""

    def after_enqueue(self, app: GopherQ, messages: Sequence[Message], ids: Sequence[str]) -> None:
        """Messages were sent; ``ids[i]`` is what the broker returned for ``messages[i]``."""

    def on_enqueue_error(
        self, app: GopherQ, messages: Sequence[Message], error: BaseException
    ) -> None:
        """The batch was not sent: a ``before_enqueue`` hook (maybe not this one's, which
        may not have run) refused it, or the broker call raised ``error``."""

    def before_execute(self, app: GopherQ, message: Message, context: TaskContext) -> None:
        """The task is about to run in this process."""

    def after_execute(
        self,
        app: GopherQ,
        message: Message,
        context: TaskContext,
        outcome: Outcome,
        runtime: float,
    ) -> None:
        """A run ended with ``outcome``, ``runtime`` seconds after it began.

        ``context`` says which attempt ran where; for a message that could not
        run (bad body, unknown task, expired) ``before_execute`` was not called.
        """

    def on_retry(self, app: GopherQ, message: Message, outcome: Outcome) -> None:
        """The run ends in a retry ``outcome.countdown`` seconds from now."""

    def on_dead(self, app: GopherQ, message: Message, outcome: Outcome) -> None:
        """The run ends in the dead letters, for ``outcome.reason``."""

    def on_cancel(self, app: GopherQ, message: Message, was: State, attempt: int) -> None:
        """A ``QUEUED`` or ``SCHEDULED`` message was cancelled (removed before any worker
        took it). A task stopped by its worker ends in ``after_execute`` instead, with
        the outcome ``cancel``."""

    def on_progress(self, app: GopherQ, context: TaskContext, progress: Progress) -> None:
        """The running task reported progress."""

    def on_lost(self, app: GopherQ, message: Message, worker: str, error: str) -> None:
        """The process ``worker`` died running ``message`` (only its id, task, queue and
        attempt are known); it goes back to the queue."""

    def worker_process_init(self, app: GopherQ) -> None:
        """This process was just forked by a worker's supervisor to run tasks (or the
        ``-B`` beat); clients that must not be shared across a fork start here."""

    def worker_process_shutdown(self, app: GopherQ) -> None:
        """This worker process is about to exit (flush what it buffers)."""

    def worker_start(self, app: GopherQ, worker: WorkerInfo) -> None:
        """A worker's processes are up."""

    def worker_heartbeat(self, app: GopherQ, worker: WorkerInfo, stats: WorkerStats) -> None:
        """A running worker's periodic sign of life."""

    def worker_stop(self, app: GopherQ, worker: WorkerInfo) -> None:
        """A worker stopped gracefully."""


class MiddlewareStack(Middleware):
    """The app's middleware, in order; each hook calls every member's.

    What the app, runner and worker call. It is false while empty, so that the
    hot path pays one truth test when no middleware is installed.
    """

    def __init__(self, members: Sequence[Middleware] = ()) -> None:
        self._members: list[Middleware] = list(members)
        self._reversed: list[Middleware] = self._members[::-1]

    def add(self, middleware: Middleware) -> None:
        """Add ``middleware`` last: its "before" hooks run last, its "after" hooks first."""
        if not isinstance(middleware, Middleware):
            raise TypeError(f"middleware must subclass gopherq.Middleware, not {middleware!r}")
        self._members.append(middleware)
        self._reversed = self._members[::-1]

    def insert_first(self, middleware: Middleware) -> None:
        """Add ``middleware`` first (the event emitter's place)."""
        self.add(middleware)
        self._members.insert(0, self._members.pop())
        self._reversed = self._members[::-1]

    def remove(self, middleware: Middleware) -> None:
        """Take ``middleware`` out; ``ValueError`` if it is not installed."""
        self._members.remove(middleware)
        self._reversed = self._members[::-1]

    def __bool__(self) -> bool:
        return bool(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Middleware]:
        return iter(self._members)

    def before_enqueue(self, app: GopherQ, messages: Sequence[Message]) -> None:
        """Run every ``before_enqueue`` in order; an exception propagates."""
        for member in self._members:
            member.before_enqueue(app, messages)

    def after_enqueue(self, app: GopherQ, messages: Sequence[Message], ids: Sequence[str]) -> None:
        """Run every ``after_enqueue``, last added first."""
        _each(self._reversed, "after_enqueue", lambda m: m.after_enqueue(app, messages, ids))

    def on_enqueue_error(
        self, app: GopherQ, messages: Sequence[Message], error: BaseException
    ) -> None:
        """Run every ``on_enqueue_error``, last added first."""
        _each(
            self._reversed, "on_enqueue_error", lambda m: m.on_enqueue_error(app, messages, error)
        )

    def before_execute(self, app: GopherQ, message: Message, context: TaskContext) -> None:
        """Run every ``before_execute`` in order."""
        _each(self._members, "before_execute", lambda m: m.before_execute(app, message, context))

    def after_execute(
        self,
        app: GopherQ,
        message: Message,
        context: TaskContext,
        outcome: Outcome,
        runtime: float,
    ) -> None:
        """Run every ``after_execute``, then ``on_retry`` or ``on_dead``, last added first."""
        _each(
            self._reversed,
            "after_execute",
            lambda m: m.after_execute(app, message, context, outcome, runtime),
        )
        if outcome.action == "retry":
            self.on_retry(app, message, outcome)
        elif outcome.action == "dead":
            self.on_dead(app, message, outcome)

    def on_retry(self, app: GopherQ, message: Message, outcome: Outcome) -> None:
        """Run every ``on_retry``, last added first."""
        _each(self._reversed, "on_retry", lambda m: m.on_retry(app, message, outcome))

    def on_dead(self, app: GopherQ, message: Message, outcome: Outcome) -> None:
        """Run every ``on_dead``, last added first."""
        _each(self._reversed, "on_dead", lambda m: m.on_dead(app, message, outcome))

    def on_cancel(self, app: GopherQ, message: Message, was: State, attempt: int) -> None:
        """Run every ``on_cancel``, last added first."""
        _each(self._reversed, "on_cancel", lambda m: m.on_cancel(app, message, was, attempt))

    def on_progress(self, app: GopherQ, context: TaskContext, progress: Progress) -> None:
        """Run every ``on_progress``, last added first."""
        _each(self._reversed, "on_progress", lambda m: m.on_progress(app, context, progress))

    def on_lost(self, app: GopherQ, message: Message, worker: str, error: str) -> None:
        """Run every ``on_lost``, last added first."""
        _each(self._reversed, "on_lost", lambda m: m.on_lost(app, message, worker, error))

    def worker_process_init(self, app: GopherQ) -> None:
        """Run every ``worker_process_init`` in order."""
        _each(self._members, "worker_process_init", lambda m: m.worker_process_init(app))

    def worker_process_shutdown(self, app: GopherQ) -> None:
        """Run every ``worker_process_shutdown``, last added first."""
        _each(self._reversed, "worker_process_shutdown", lambda m: m.worker_process_shutdown(app))

    def worker_start(self, app: GopherQ, worker: WorkerInfo) -> None:
        """Run every ``worker_start`` in order."""
        _each(self._members, "worker_start", lambda m: m.worker_start(app, worker))

    def worker_heartbeat(self, app: GopherQ, worker: WorkerInfo, stats: WorkerStats) -> None:
        """Run every ``worker_heartbeat``, last added first."""
        _each(self._reversed, "worker_heartbeat", lambda m: m.worker_heartbeat(app, worker, stats))

    def worker_stop(self, app: GopherQ, worker: WorkerInfo) -> None:
        """Run every ``worker_stop``, last added first."""
        _each(self._reversed, "worker_stop", lambda m: m.worker_stop(app, worker))


def _each(members: list[Middleware], hook: str, call: Callable[[Middleware], object]) -> None:
    """Call ``call`` on each member; log an exception and go on to the next."""
    for member in members:
        try:
            call(member)
        except Exception:
            logger.exception("middleware %s.%s failed", type(member).__name__, hook)
