"""Task counters in shared memory: each worker process counts into a block of its own.

The supervisor maps one anonymous shared ``mmap`` before forking, with one
block per child process and one for itself (it settles the tasks of the
children it kills). A process adds to its own block only (plain stores of
doubles, no system call, no lock: one writer per block); the supervisor sums
every block when scraped. When a child exits, however it ends, the supervisor
folds its block into a private total and zeroes the block for the
replacement: so no count is lost with a process, and counters never go down.

Layout of a block (float64 cells)::

    cell 0        rows used (n)
    row r         cells 1 + r * ROW ... : one (task, queue) pair

and of a row::

    KEY           1 + task index * queues + queue index (0: unused)
    ACK           succeeded
    RETRY         retried
    CANCEL        cancelled
    DEAD + i      dead-lettered for reason i (``REASONS``): failed, expired or dead
    DURATION + b  runs ending in duration bucket b (the last: above every bound)
    DURATION_SUM  their total seconds
    WAIT + b      starts after a queue wait in bucket b (first attempts)
    WAIT_SUM      their total seconds

Rows are taken in the order pairs first appear in a process: its key is
written before the row count moves past it, so a reader never sees a row
without its key. Names become indices of lists fixed before the fork (the
registered tasks and the worker's queues, each plus ``UNKNOWN``), so a hostile
message cannot add series, and an unused row costs nothing (an untouched
page of an anonymous mapping has no memory behind it). Counts are exact in
doubles up to 2**53.
"""

from __future__ import annotations

import mmap
import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import cast

from gopherq.states import DeadReason

UNKNOWN = "unknown"
"""The label of a task name that is not registered (or a queue not consumed)."""
REASONS: tuple[DeadReason, ...] = tuple(DeadReason)
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
"""Upper bounds (seconds) of the task duration histogram: a millisecond to 10 minutes."""
WAIT_BUCKETS = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
    30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
"""Upper bounds (seconds) of the queue wait histogram: a millisecond to an hour."""

KEY, ACK, RETRY, CANCEL, DEAD = 0, 1, 2, 3, 4
DURATION = DEAD + len(REASONS)
DURATION_SUM = DURATION + len(DURATION_BUCKETS) + 1
WAIT = DURATION_SUM + 1
WAIT_SUM = WAIT + len(WAIT_BUCKETS) + 1
ROW = WAIT_SUM + 1
"""Cells per row."""
MAX_ROWS = 65536
"""Most (task, queue) rows of one block; past it, counts go to the (unknown, unknown) row."""
_CELL = 8


def dead_column(reason: DeadReason | None) -> int:
    """The row cell counting dead letters for ``reason`` (None counts as UNKNOWN_TASK)."""
    return DEAD + REASONS.index(reason or DeadReason.UNKNOWN_TASK)


class CounterTable:
    """Blocks of counters for ``blocks`` processes, over the ``tasks`` and ``queues``
    labels given (each list gets ``UNKNOWN`` added). Build it before forking."""

    def __init__(self, tasks: Sequence[str], queues: Sequence[str], blocks: int) -> None:
        self.tasks: tuple[str, ...] = (*sorted(set(tasks) - {UNKNOWN}), UNKNOWN)
        self.queues: tuple[str, ...] = (*dict.fromkeys(q for q in queues if q != UNKNOWN), UNKNOWN)
        self.capacity = min(len(self.tasks) * len(self.queues), MAX_ROWS)
        self._block_cells = 1 + self.capacity * ROW
        self._blocks = blocks
        self._memory = mmap.mmap(-1, blocks * self._block_cells * _CELL)
        self._cells = memoryview(self._memory).cast("d")
        self._retired: dict[int, list[float]] = {}
        self._lock = threading.Lock()  # a scrape never sees a block half folded

    def writer(self, block: int, *, timed: bool = True) -> BlockWriter:
        """The writer of block ``block``, for the process that owns it; ``timed``: its
        runtimes are real (the supervisor's, for killed processes, are not)."""
        if not 0 <= block < self._blocks:
            raise IndexError(f"no counter block {block}")
        return BlockWriter(self, block * self._block_cells, timed=timed)

    def label(self, key: int) -> tuple[str, str]:
        """The ``(task, queue)`` labels of a row key."""
        task, queue = divmod(key - 1, len(self.queues))
        return self.tasks[task], self.queues[queue]

    def totals(self) -> dict[int, list[float]]:
        """Every row key with its cells summed over the blocks and the folded ones."""
        with self._lock:
            totals = {key: list(row) for key, row in self._retired.items()}
            for block in range(self._blocks):
                for key, row in self._rows(block):
                    _add(totals, key, row)
        return totals

    def fold(self, block: int) -> None:
        """Keep the counts of block ``block`` (its process exited) and zero it for the
        next process; call before forking that one."""
        with self._lock:
            for key, row in self._rows(block):
                _add(self._retired, key, row)
            base = block * self._block_cells * _CELL
            self._memory[base : base + self._block_cells * _CELL] = bytes(self._block_cells * _CELL)

    def _rows(self, block: int) -> list[tuple[int, list[float]]]:
        base = block * self._block_cells
        used = min(int(self._cells[base]), self.capacity)
        rows = []
        for r in range(used):
            start = base + 1 + r * ROW
            row = cast("list[float]", self._cells[start : start + ROW].tolist())
            key = int(row[KEY])
            if 0 < key <= len(self.tasks) * len(self.queues):
                rows.append((key, row))
        return rows


def _add(totals: dict[int, list[float]], key: int, row: list[float]) -> None:
    total = totals.get(key)
    if total is None:
        totals[key] = list(row)
        return
    for i in range(1, ROW):
        total[i] += row[i]


class BlockWriter:
    """Counts one process's task outcomes into its block (see the module docstring)."""

    __slots__ = ("_base", "_cells", "_overflow", "_queues", "_rows", "_table", "_tasks", "timed")

    def __init__(self, table: CounterTable, base: int, *, timed: bool) -> None:
        self._table = table
        self._cells = table._cells
        self._base = base
        self._tasks = {name: i * len(table.queues) for i, name in enumerate(table.tasks)}
        self._queues = {name: i for i, name in enumerate(table.queues)}
        self._overflow = len(table.tasks) * len(table.queues)  # the (unknown, unknown) key
        self._rows: dict[int, int] = {}  # key -> index of its first cell
        self.timed = timed

    def count(
        self, task: str, queue: str, column: int, runtime: float | None, wait: float | None
    ) -> None:
        """Add one outcome (``column``: ACK, RETRY, CANCEL or a ``dead_column``) of
        ``task`` on ``queue``; with its ``runtime`` and queue ``wait`` when known."""
        tasks, queues = self._tasks, self._queues
        key = 1 + tasks.get(task, tasks[UNKNOWN]) + queues.get(queue, queues[UNKNOWN])
        row = self._rows.get(key)
        if row is None:
            row = self._new_row(key)
        cells = self._cells
        cells[row + column] += 1.0
        if runtime is not None:
            cells[row + DURATION + bisect_left(DURATION_BUCKETS, runtime)] += 1.0
            cells[row + DURATION_SUM] += runtime
        if wait is not None:
            cells[row + WAIT + bisect_left(WAIT_BUCKETS, wait)] += 1.0
            cells[row + WAIT_SUM] += wait

    def _new_row(self, key: int) -> int:
        cells, base, overflow = self._cells, self._base, self._overflow
        used = int(cells[base])
        reserved = 0 if overflow in self._rows else 1  # the last row is kept for overflow
        if key != overflow and used + reserved >= self._table.capacity:
            row = self._rows.get(overflow) or self._new_row(overflow)
            self._rows[key] = row
            return row
        row = base + 1 + used * ROW
        cells[row + KEY] = float(key)
        cells[base] = float(used + 1)  # after the key: a reader never sees a keyless row
        self._rows[key] = row
        return row
