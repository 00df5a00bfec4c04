"""Prometheus metrics of a prefork worker, right however many processes it has.

::

    child 0: TaskMetrics.after_execute ──adds to──> block 0 ┐
    child 1: TaskMetrics.after_execute ──adds to──> block 1 ├ CounterTable (shared mmap)
    supervisor (tasks of killed children) ────────> block N ┘      │ folds a dead
                                                                   │ child's block
    supervisor: HTTP thread ── /metrics ── WorkerCollector ── sums ┘ (no count lost)

Task outcomes are counted in the process that settles them, into its own
block of shared memory (``gopherq.observability.counters``); the supervisor
sums the blocks when scraped, and keeps the counts of every child that exits.
So one series per (task, queue), whichever process ran the task, with no
files, no locks on the hot path and nothing to clean up. The gauges
(processes, tasks in progress) and restarts come from the supervisor itself:
in progress from the children's slots (``gopherq.worker.slots``).

Only a worker started with a metrics port imports this module and installs
``TaskMetrics``: without it the children do no metrics work at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gopherq.middleware import Middleware
from gopherq.observability.counters import (
    ACK,
    CANCEL,
    DEAD,
    DURATION,
    DURATION_BUCKETS,
    DURATION_SUM,
    REASONS,
    RETRY,
    WAIT,
    WAIT_BUCKETS,
    WAIT_SUM,
    BlockWriter,
    CounterTable,
    dead_column,
)
from gopherq.states import DeadReason

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.context import TaskContext
    from gopherq.message import Message
    from gopherq.runner import Outcome

OUTCOMES = ("succeeded", "failed", "retried", "dead", "cancelled", "expired")
"""Values of the ``outcome`` label of ``gopherq_tasks_total``."""
RESTART_CAUSES = ("died", "recycled", "time_limit", "cancelled")
"""Values of the ``cause`` label of ``gopherq_worker_child_restarts_total``."""

_COLUMNS = {"ack": ACK, "retry": RETRY, "cancel": CANCEL}
_FAILED = frozenset({DeadReason.MAX_RETRIES, DeadReason.TIME_LIMIT})
_RAN = frozenset({DeadReason.MAX_RETRIES, DeadReason.REJECTED})
"""Dead letters whose task ran to an end in the process (so with a duration)."""


class TaskMetrics(Middleware):
    """Counts each run's outcome, duration and queue wait into this process's block.

    The supervisor installs it before forking and ``attach``es each process to
    its block; until then (and in a ``-B`` beat process) it does nothing.
    """

    def __init__(self, table: CounterTable) -> None:
        self.table = table
        self._writer: BlockWriter | None = None

    def attach(self, block: int, *, timed: bool = True) -> None:
        """Count from now on into ``block`` (see ``CounterTable.writer``)."""
        self._writer = self.table.writer(block, timed=timed)

    def detach(self) -> None:
        """Count nothing in this process."""
        self._writer = None

    def after_execute(
        self,
        app: GopherQ,
        message: Message,
        context: TaskContext,
        outcome: Outcome,
        runtime: float,
    ) -> None:
        """Count the outcome; a run that ran the task to an end also adds its
        duration and, on a first attempt, the time it waited in its queue."""
        writer = self._writer
        if writer is None:
            return
        action = outcome.action
        column = _COLUMNS.get(action) or dead_column(outcome.reason)
        ran = writer.timed and action != "cancel" and (action != "dead" or outcome.reason in _RAN)
        wait = None
        if ran and context.attempt == 0 and message.created:
            due = max(message.created, message.eta or 0.0)
            wait = max(time.time() - runtime - due, 0.0)
        writer.count(message.task, message.queue, column, runtime if ran else None, wait)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """The supervisor's state as a scrape or a probe sees it."""

    children: int
    """Consumer processes alive."""
    running: Mapping[str, int] = field(default_factory=dict)
    """Tasks running now, by queue."""
    expected: int = 0
    """Consumer processes it runs when none is missing."""
    stopping: bool = False
    tick: float | None = None
    """``time.monotonic()`` of the supervisor loop's last round (None: not started)."""


class WorkerMetrics:
    """One worker's metrics, in its supervisor: the counter table of its ``concurrency``
    processes (and its own), the middleware that fills it, and its restarts."""

    def __init__(self, app: GopherQ, queues: Sequence[str], concurrency: int) -> None:
        self.table = CounterTable(list(app.tasks), queues, concurrency + 1)
        self.middleware = TaskMetrics(self.table)
        self.restarts = dict.fromkeys(RESTART_CAUSES, 0)
        self._supervisor = concurrency

    def attach_supervisor(self) -> None:
        """Count the tasks the supervisor settles (of killed processes: no durations)."""
        self.middleware.attach(self._supervisor, timed=False)

    def exited(self, block: int, restart: str | None) -> None:
        """The process of ``block`` exited: keep its counts; ``restart``: the cause,
        when it is replaced."""
        self.table.fold(block)
        if restart is not None:
            self.restarts[restart] = self.restarts.get(restart, 0) + 1

    def registry(self, view: Callable[[], WorkerView]) -> CollectorRegistry:
        """A registry of the worker's metrics and the supervisor's process metrics."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkerCollector(self, view))
        ProcessCollector(registry=registry)
        return registry


class WorkerCollector(Collector):
    """The ``gopherq_*`` metrics of one worker, summed over its processes."""

    def __init__(self, metrics: WorkerMetrics, view: Callable[[], WorkerView]) -> None:
        self.metrics = metrics
        self.view = view

    def collect(self) -> Iterator[Metric]:
        """Every metric family, read now."""
        table = self.metrics.table
        totals = table.totals()
        tasks = CounterMetricFamily(
            "gopherq_tasks",
            "Task runs by outcome (a retried run counts once per attempt).",
            labels=["task", "queue", "outcome"],
        )
        duration = HistogramMetricFamily(
            "gopherq_task_duration_seconds",
            "Seconds a task ran (runs that ran the task to an end).",
            labels=["task", "queue"],
        )
        dead: dict[tuple[str, DeadReason], float] = {}
        waits: dict[str, list[float]] = {}
        for key, row in sorted(totals.items()):
            task, queue = table.label(key)
            by_reason = dict(zip(REASONS, row[DEAD : DEAD + len(REASONS)], strict=True))
            for reason, count in by_reason.items():
                dead[queue, reason] = dead.get((queue, reason), 0.0) + count
            for outcome, value in _outcomes(row, by_reason):
                tasks.add_metric([task, queue, outcome], value)
            duration.add_metric(
                [task, queue],
                _buckets(DURATION_BUCKETS, row[DURATION:DURATION_SUM]),
                row[DURATION_SUM],
            )
            wait = waits.setdefault(queue, [0.0] * (WAIT_SUM - WAIT + 1))
            for i, value in enumerate(row[WAIT : WAIT_SUM + 1]):
                wait[i] += value
        yield tasks
        yield duration
        yield _wait_family(waits)
        letters = CounterMetricFamily(
            "gopherq_dead_letters",
            "Messages dead-lettered, by reason.",
            labels=["queue", "reason"],
        )
        for (queue, reason), count in sorted(dead.items()):
            letters.add_metric([queue, reason.value], count)
        yield letters
        yield from self._supervisor_metrics()

    def _supervisor_metrics(self) -> Iterator[Metric]:
        view = self.view()
        progress = GaugeMetricFamily(
            "gopherq_tasks_in_progress", "Tasks running now.", labels=["queue"]
        )
        for queue in self.metrics.table.queues[:-1]:
            progress.add_metric([queue], view.running.get(queue, 0))
        yield progress
        yield GaugeMetricFamily(
            "gopherq_worker_children", "Worker processes alive.", value=view.children
        )
        restarts = CounterMetricFamily(
            "gopherq_worker_child_restarts",
            "Worker processes replaced, by cause.",
            labels=["cause"],
        )
        for cause, count in dict(self.metrics.restarts).items():
            restarts.add_metric([cause], count)
        yield restarts


def _outcomes(row: list[float], by_reason: dict[DeadReason, float]) -> Iterator[tuple[str, float]]:
    """``(outcome, count)`` for each of ``OUTCOMES``: failed (no retries left, or time
    limit), expired, and dead (could not run) split the dead letters by reason."""
    failed = sum(by_reason[r] for r in _FAILED)
    expired = by_reason[DeadReason.EXPIRED]
    yield "succeeded", row[ACK]
    yield "failed", failed
    yield "retried", row[RETRY]
    yield "dead", sum(by_reason.values()) - failed - expired
    yield "cancelled", row[CANCEL]
    yield "expired", expired


def _buckets(bounds: Sequence[float], counts: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs from per-bucket ``counts`` (the last above all)."""
    pairs, total = [], 0.0
    for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        total += count
        pairs.append((bound, total))
    return pairs


def _wait_family(waits: Mapping[str, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "gopherq_task_queue_wait_seconds",
        "Seconds from enqueue (or ETA) to start, of first attempts.",
        labels=["queue"],
    )
    for queue, cells in sorted(waits.items()):
        family.add_metric([queue], _buckets(WAIT_BUCKETS, cells[:-1]), cells[-1])
    return family
