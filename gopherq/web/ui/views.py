"""What the dashboard's pages show, read through ``gopherq.admin`` and the broker:
plain data, shaped for the templates and the live-update JSON."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gopherq import admin, admin_queues
from gopherq.admin_queues import QueueInfo
from gopherq.errors import NotSupported

if TYPE_CHECKING:
    from gopherq.app import GopherQ

DEAD_SAMPLE = 1000
"""Newest dead letters counted for the overview's "by reason" table."""


@dataclass(frozen=True, slots=True)
class Overview:
    """The overview page's numbers."""

    queues: tuple[QueueInfo, ...]
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
            "queues": [
                {
                    "name": q.name,
                    "ready": q.ready,
                    "scheduled": q.scheduled,
                    "running": q.running,
                    "dead": q.dead,
                    "paused": q.paused,
                    "oldest_age": q.oldest_age,
                }
                for q in self.queues
            ],
            "workers": {"online": len(self.workers), "checked": self.workers_checked},
            "dead_by_reason": [{"reason": r, "count": n} for r, n in self.dead_by_reason],
        }


def queue_rows(app: GopherQ) -> list[QueueInfo]:
    """Every known queue with its depths, by name (``admin_queues.queue_infos``); only
    the names where the broker cannot tell depths."""
    try:
        return admin_queues.queue_infos(app)
    except NotSupported:
        return [QueueInfo(name) for name in admin.known_queues(app)]


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
