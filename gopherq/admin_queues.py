"""Queues as operators handle them: depths, pause, resume, purge.

What ``gopherq stats/pause/resume/purge`` and the HTTP API's ``/queues`` routes
both call. A queue is known when the broker has messages of it or has it paused,
or when the app declares it (its default queue, its tasks' queues and routes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gopherq.admin import known_queues
from gopherq.brokers.base import QueueDepth
from gopherq.errors import GopherQError
from gopherq.routes import declared_queues
from gopherq.states import Priority

if TYPE_CHECKING:
    from gopherq.app import GopherQ


class UnknownQueue(GopherQError):
    """Neither the broker nor the app knows the queue (a typo?)."""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue: its messages by place, whether it is paused, and whether the app
    declares it."""

    name: str
    ready: int = 0
    ready_by_priority: dict[int | None, int] = field(default_factory=dict)
    """Ready messages by priority (0 critical to 4 bulk); the key None holds those of
    a broker that cannot tell priorities apart."""
    scheduled: int = 0
    running: int = 0
    dead: int = 0
    paused: bool = False
    oldest_age: float | None = None
    """Seconds the oldest ready message has waited; None when none is ready or the
    broker cannot tell."""
    declared: bool = False
    """Whether the app declares it (default queue, a task's queue or a route's)."""

    @property
    def by_priority(self) -> list[tuple[str, int]]:
        """Ready messages per priority name, most urgent first (``any`` for those of a
        broker that cannot tell priorities apart)."""
        ordered = sorted(self.ready_by_priority.items(), key=lambda i: -1 if i[0] is None else i[0])
        return [(_priority_name(p), n) for p, n in ordered]


def _priority_name(priority: int | None) -> str:
    if priority is None:
        return "any"
    try:
        return Priority(priority).name.lower()
    except ValueError:
        return str(priority)


def _info(depth: QueueDepth, declared: bool) -> QueueInfo:
    return QueueInfo(
        depth.name,
        sum(depth.ready.values()),
        dict(depth.ready),
        depth.scheduled,
        depth.running,
        depth.dead,
        depth.paused,
        depth.oldest_age,
        declared,
    )


def queue_infos(app: GopherQ) -> list[QueueInfo]:
    """Every known queue by name, with its depths (a declared queue the broker has no
    message of shows zeros). Needs the broker's ``queue_depths`` (or ``stats``)."""
    depths = app.broker.queue_depths()
    declared = set(declared_queues(app))
    return [
        _info(depths.get(name) or QueueDepth(name), name in declared)
        for name in sorted(depths.keys() | declared)
    ]


def queue_info(app: GopherQ, name: str) -> QueueInfo:
    """The queue ``name``; ``UnknownQueue`` if neither the broker nor the app knows it."""
    depth = app.broker.queue_depths().get(name)
    declared = name in declared_queues(app)
    if depth is None and not declared:
        raise UnknownQueue(unknown_message(app, name))
    return _info(depth or QueueDepth(name), declared)


def unknown_message(app: GopherQ, name: str) -> str:
    """Why queue ``name`` is refused as unknown."""
    return (
        f"unknown queue {name!r}: no task of app {app.name} is declared on it and "
        "the broker has no message of it"
    )


def check_known(app: GopherQ, name: str) -> None:
    """``UnknownQueue`` unless the broker or the app knows queue ``name``."""
    if name not in known_queues(app):
        raise UnknownQueue(unknown_message(app, name))


def pause(app: GopherQ, name: str, *, create: bool = False) -> None:
    """Stop workers taking messages from ``name``; sending still works. A queue nothing
    knows is refused (``UnknownQueue``) unless ``create``."""
    if not create:
        check_known(app, name)
    app.broker.pause(name)


def resume(app: GopherQ, name: str) -> None:
    """Let workers take messages from ``name`` again."""
    app.broker.resume(name)


def purge(app: GopherQ, name: str) -> int:
    """Delete the ready and scheduled messages of ``name`` (running ones stay); how many."""
    return app.broker.purge(name)
