"""What a running task stores as it goes: its STARTED record, progress and checkpoints.

The runner makes one ``JobTracker`` per run and hands it to the task's
``TaskContext`` as its control. It builds every job record of that run, so
that each record carries the last progress and checkpoint known: a retry's
``RETRYING`` record keeps the checkpoint that the next attempt resumes from.

In a worker (``delivery`` given) every record stored during the run is fenced
like the final one (see ``gopherq.worker.settle``): it is stored only while the
broker still holds the delivery, and the write renews the lease. A task whose
lease ran out (another worker runs it now) never overwrites that worker's
record with its progress: its reports are dropped, and ``checkpoint`` raises.

On a first run nothing is read. When the task runs again (a retry, or a
redelivery after its worker died), the record of the previous run is read
once, on the first write or read of progress or checkpoint, or when the run's
final record is built, so that its checkpoint is kept.

A result store that fails never ends the task nor its worker process: the
STARTED record and progress reports are best effort (skipped, with one warning
per outage, while a ``StoreBackoff`` shared by the runs of a process waits
between attempts), and a previous record that cannot be read leaves the final
record without the earlier progress and checkpoint. Only ``checkpoint()``
raises in the task when its store fails: it promises durability.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gopherq.backoff import next_backoff
from gopherq.brokers.base import Delivery
from gopherq.context import TaskContext
from gopherq.errors import TaskError
from gopherq.results.base import ErrorInfo, JobRecord, Progress, ResultBackend, Settling
from gopherq.states import State

if TYPE_CHECKING:
    from gopherq.app import GopherQ

logger = logging.getLogger("gopherq.worker")

PROGRESS_EVERY = 0.1
"""Seconds between stored progress reports; those in between fold into the next."""


def never_cancelled(id: str) -> bool:
    """The cancel check where nothing can be cancelled (eager runs, bare consumers)."""
    return False


class StoreBackoff:
    """Spaces out best-effort stores (STARTED records, progress) while the result store
    fails: after a failure none is tried for a pause that grows as the consumer's
    does; one warning per outage, and one line when the store works again."""

    __slots__ = ("_delay", "_until")

    def __init__(self) -> None:
        self._delay = 0.0
        self._until = 0.0

    def ready(self) -> bool:
        """Whether to try a best-effort store now."""
        return self._until == 0.0 or time.monotonic() >= self._until

    def failed(self, context: TaskContext, what: str, exc: Exception) -> None:
        """A best-effort store of ``what`` for ``context``'s task failed with ``exc``."""
        if not self._delay:
            logger.warning(
                "task %s[%s]: could not store %s (result store failing; "
                "such records are skipped until it works again): %s",
                context.name,
                context.id,
                what,
                exc,
            )
        self._delay = next_backoff(self._delay)
        self._until = time.monotonic() + self._delay

    def succeeded(self) -> None:
        """A store worked: the next ones are tried at once."""
        if self._delay:
            logger.info("the result store works again")
            self._delay = self._until = 0.0


class JobTracker:
    """Builds and stores the job records of one run. See the module docstring."""

    __slots__ = (
        "_backoff",
        "_cancelled",
        "_checkpoint",
        "_delivery",
        "_loaded",
        "_progress",
        "_published",
        "_rerun",
        "app",
        "created",
        "keep",
        "started",
        "wrote",
    )

    def __init__(
        self,
        app: GopherQ,
        *,
        created: float | None,
        started: float,
        rerun: bool,
        keep: bool,
        cancelled: Callable[[str], bool] = never_cancelled,
        backoff: StoreBackoff | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        self.app = app
        self.created = created
        self.started = started
        """Unix seconds when this run began."""
        self.keep = keep
        """Whether the task stores results (a STARTED record would never be replaced else)."""
        self.wrote = False
        """Whether a record was stored during the run (then the final one must be too)."""
        self._rerun = rerun
        self._loaded = False
        self._progress: Progress | None = None
        self._checkpoint: bytes | None = None
        self._published = -PROGRESS_EVERY
        self._cancelled = cancelled
        self._backoff = backoff or StoreBackoff()
        self._delivery = delivery  # a worker's lease: what fences the writes

    def record(
        self,
        context: TaskContext,
        state: State,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
    ) -> JobRecord:
        """The record of this run in ``state``; a success drops the checkpoint."""
        if self._rerun and not self._loaded:
            try:
                self._load(context)
            except Exception as exc:  # the record must still be built: the run's outcome
                logger.warning(
                    "task %s[%s]: could not read its previous record, so its earlier "
                    "progress and checkpoint are not kept: %s",
                    context.name,
                    context.id,
                    exc,
                )
        finished = None if state is State.STARTED else time.time()
        return JobRecord(
            id=context.id,
            task=context.name,
            state=state,
            queue=context.queue,
            result=result,
            error=error,
            attempts=context.attempt + 1,
            created=self.created,
            started=self.started,
            finished=finished,
            worker=context.worker,
            progress=self._progress,
            checkpoint=None if state is State.SUCCEEDED else self._checkpoint,
        )

    def announce(self, context: TaskContext) -> None:
        """Make the start visible now: store STARTED and publish the buffered events.

        For tasks that may run long; a short one's start shows with its end. Best
        effort: a store that fails is logged (once per outage) and the task runs.
        """
        if self.keep:
            self._try_store(context, "its STARTED record")
        self.app.events.flush()

    # JobControl, called through the TaskContext.

    def progress(self, context: TaskContext, progress: Progress) -> None:
        """Keep ``progress``; store it and send an event unless one went out just now.

        Best effort: a store that fails is logged (once per outage), and the task goes on.
        """
        self._progress = progress
        now = time.monotonic()
        final = progress.total is not None and progress.done >= progress.total
        if now - self._published < PROGRESS_EVERY and not final:
            return  # folded into the next report, or the final record
        self._published = now
        self._try_store(context, "its progress")
        if self.app.middleware:
            self.app.middleware.on_progress(self.app, context, progress)
        self.app.events.flush()

    def checkpoint(self, context: TaskContext, state: Any) -> None:
        """Store ``state`` with the job now, durably; a failure raises in the task (which
        its retry options then handle), never past it."""
        self._checkpoint = self.app.codec.pack(state, what="checkpoint")
        if not self._store(context):
            raise TaskError(
                f"task {context.id}: checkpoint not stored, this worker lost its lease "
                "(another worker runs the task now)"
            )

    def checkpoint_state(self, context: TaskContext) -> Any:
        """The last checkpoint of this task id: this run's, else an earlier run's (a store
        that fails to answer raises in the task)."""
        self._load(context)
        return None if self._checkpoint is None else self.app.codec.unpack(self._checkpoint)

    def cancelled(self, context: TaskContext) -> bool:
        """Whether the worker was told that a cancel of this task was requested."""
        return self._cancelled(context.id)

    def _try_store(self, context: TaskContext, what: str) -> None:
        """Store the STARTED record unless the store is failing; never raises."""
        if not self._backoff.ready():
            return
        try:
            self._store(context)
        except Exception as exc:
            self._backoff.failed(context, what, exc)
        else:
            self._backoff.succeeded()

    def result_backend(self) -> ResultBackend:
        """The app's result store (where ``gopherq.once`` keeps its markers)."""
        return self.app.backend

    def _store(self, context: TaskContext) -> bool:
        """Store the STARTED record now; False, storing nothing, if the lease was lost."""
        record = self.record(context, State.STARTED)
        if self._delivery is None:
            self.app.backend.store([record])
        else:
            item = Settling(self._delivery, record, ack=False)
            held, _ = self.app.backend.store_fenced(self.app.broker, [item])
            if not held:
                return False
        self.wrote = True
        return True

    def _load(self, context: TaskContext) -> None:
        """Take over the previous run's progress and checkpoint, once."""
        if self._loaded:
            return
        previous = self.app.backend.get(context.id)  # may raise: then tried again later
        self._loaded = True
        if previous is not None:
            self._progress = self._progress or previous.progress
            self._checkpoint = self._checkpoint or previous.checkpoint
