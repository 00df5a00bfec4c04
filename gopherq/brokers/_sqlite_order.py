"""The SQLite broker's reserve in a ``ReserveOrder``: strict queue order, priority aging.

One statement, as the plain reserve: each queue gives its first ``limit`` ready rows
by an index range scan of ``messages_ready`` (queue, priority, run_at), and only
those are merged. A queue with aging gives the first ``limit`` rows of each
priority level instead (one range scan per level, ``LEVELS``, plus two for a
priority outside them, which does not age): within a level, line order is run_at
order, so the best of the queue is among those heads, and no scan reads a row
beyond them. The merge orders by (queue position when strict, level, run_at, seq),
where a row of an aging queue has its aged level (``base.aged``: run_at is when it
joined the line), and any other row its priority.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from gopherq.brokers._sqlite_rows import lease_sql
from gopherq.brokers.base import ReserveOrder, aged
from gopherq.states import Priority

LEVELS = sorted(int(p) for p in Priority)
"""The priority levels that age: one range scan each."""

Params = tuple[Any, ...]
SortKey = Callable[[tuple[Any, ...]], tuple[Any, ...]]


def statement(
    queues: Sequence[str], order: ReserveOrder, lease_until: float, limit: int, now: float
) -> tuple[str, Params, SortKey]:
    """The lease statement (``_sqlite_rows.lease_sql``), its parameters, and the sort
    key of the rows it returns (``_sqlite_rows.RETURNED``) in ``order``."""
    periods = [order.aging.get(queue) for queue in queues]
    sql = _statement(order.strict, tuple(period is not None for period in periods))
    params: Params = (lease_until, limit, now, *queues, *(p for p in periods if p is not None))
    rank = {queue: n if order.strict else 0 for n, queue in enumerate(queues)}
    aging = {queue: period for queue, period in zip(queues, periods, strict=True) if period}

    def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        queue, priority, run_at = row[1], row[2], row[7]
        period = aging.get(queue)
        if period and _ages(priority):
            return rank[queue], aged(int(priority), now - run_at, period), run_at, row[8]
        return rank[queue], priority, run_at, row[8]

    return sql, params, key


@functools.lru_cache(maxsize=64)
def _statement(strict: bool, aging: tuple[bool, ...]) -> str:
    """The lease statement for queues that age or not (in this order); parameters:
    lease_until, limit, now, each queue's name, then the aging period of each that ages."""
    arms: list[str] = []
    period = 4 + len(aging)  # the parameter of the next aging period
    for n, ages in enumerate(aging):
        rank, name = (str(n) if strict else "0"), 4 + n
        if not ages:
            arms.append(_arm(rank, "priority", name, "1"))
            continue
        # A range per level, not priority = level: a row written by others with a
        # priority such as 2.5 is taken all the same.
        # aged() in SQL: the cast truncates a number from 0 up, which is its floor.
        level = f"max(0, priority - max(0, CAST((?3 - run_at) / ?{period} AS INTEGER)))"
        period += 1
        arms += [_arm(rank, level, name, f"priority >= {p} AND priority < {p + 1}") for p in LEVELS]
        arms.append(_arm(rank, "priority", name, f"priority < {LEVELS[0]}"))
        arms.append(_arm(rank, "priority", name, f"priority >= {LEVELS[-1] + 1}"))  # text too
    union = " UNION ALL ".join(f"SELECT * FROM ({arm})" for arm in arms)
    return lease_sql(f"SELECT seq FROM ({union}) ORDER BY rank, level, run_at, seq LIMIT ?2")


def _arm(rank: str, level: str, queue: int, where: str) -> str:
    """One index range scan: the first ``limit`` ready rows of queue ``?queue`` (not
    paused) that match ``where``, with their rank and level."""
    return f"""SELECT seq, priority, run_at, {rank} AS rank, {level} AS level FROM (
        SELECT seq, priority, run_at FROM messages WHERE state = 'ready' AND queue = ?{queue}
            AND {where} AND ?{queue} NOT IN (SELECT name FROM queues WHERE paused)
        ORDER BY priority, run_at, seq LIMIT ?2)"""


def _ages(priority: object) -> bool:
    """Whether a row of this priority ages (as ``_statement`` has it)."""
    return type(priority) in (int, float) and LEVELS[0] <= priority < LEVELS[-1] + 1  # type: ignore[operator]
