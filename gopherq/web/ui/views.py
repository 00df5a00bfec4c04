"""What the dashboard's pages show, read through ``gopherq.admin`` and the broker:
plain data, shaped for the templates and the live-update JSON."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gopherq import admin
from gopherq.brokers.base import QueueDepth
from gopherq.errors import NotSupported
from gopherq.states import Priority

if TYPE_CHECKING:
    from gopherq.app import GopherQ

DEAD_SAMPLE = 1000
"""Newest dead letters counted for the overview's "by reason" table."""


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue as the dashboard shows it."""

    name: str
    ready: int
    scheduled: int
    running: int
    dead: int
    paused: bool
    oldest_age: float | None
    by_priority: tuple[tuple[str, int], ...]
    """Ready messages per priority name (``any`` when the broker cannot tell)."""


@dataclass(frozen=True, slots=True)
class Overview:
    """The overview page's numbers."""

    queues: tuple[QueueRow, ...]
    workers: tuple[str, ...]
    workers_checked: bool
    """False when events are off or unreadable: the worker count is unknown."""
    dead_by_reason: tuple[tuple[str, int], ...]
    """Dead letters per reason, most first, over the newest ``DEAD_SAMPLE``."""
    time: float

    def to_json(self) -> dict[str, Any]:
        """The overview as the live-update endpoint sends it."""
        return {
            "time": self.time,
            "queues": [asdict(q) for q in self.queues],
            "workers": {"online": len(self.workers), "checked": self.workers_checked},
            "dead_by_reason": [{"reason": r, "count": n} for r, n in self.dead_by_reason],
        }


def queue_rows(app: GopherQ) -> list[QueueRow]:
    """Every known queue (``admin.known_queues``) with its depths, by name."""
    try:
        depths = app.broker.queue_depths()
    except NotSupported:
        depths = {}
    return [_row(depths.get(name) or QueueDepth(name)) for name in admin.known_queues(app)]


def overview(app: GopherQ) -> Overview:
    """The numbers of the overview page."""
    beats = admin.recent_heartbeats(app)
    return Overview(
        queues=tuple(queue_rows(app)),
        workers=beats.workers,
        workers_checked=beats.checked,
        dead_by_reason=dead_by_reason(app),
        time=time.time(),
    )


def dead_by_reason(app: GopherQ) -> tuple[tuple[str, int], ...]:
    """How many of the newest ``DEAD_SAMPLE`` dead letters died for each reason."""
    try:
        letters = admin.dead_letters(app, limit=DEAD_SAMPLE)
    except NotSupported:
        return ()
    return tuple(Counter(letter.reason for letter in letters).most_common())


def _row(depth: QueueDepth) -> QueueRow:
    priorities = sorted(depth.ready.items(), key=lambda item: -1 if item[0] is None else item[0])
    return QueueRow(
        name=depth.name,
        ready=sum(depth.ready.values()),
        scheduled=depth.scheduled,
        running=depth.running,
        dead=depth.dead,
        paused=depth.paused,
        oldest_age=depth.oldest_age,
        by_priority=tuple((_priority_name(p), n) for p, n in priorities),
    )


def _priority_name(priority: int | None) -> str:
    if priority is None:
        return "any"
    try:
        return Priority(priority).name.lower()
    except ValueError:
        return str(priority)
