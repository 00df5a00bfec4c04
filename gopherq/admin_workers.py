"""Workers as operators see them, from the worker events in the app's event log.

Each worker sends ``worker-online`` (host, pid, concurrency, queues) at start,
``worker-heartbeat`` (its processes, tasks running and done, load, and the
tasks running now) every ``worker_heartbeat`` seconds, and ``worker-offline``
when it stops gracefully. ``workers`` reads the newest ``WORKER_EVENTS_READ`` of
these and reports, per worker not gone offline, what its newest events say.
Workers alive are those with an event in the last ``MISSED_BEATS`` heartbeat
intervals, so only that window of the log is read (heartbeats repeat what
``worker-online`` said, and when); ``stale`` reads the newest events however old.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gopherq.events import EventType
from gopherq.observability.workers import MISSED_BEATS, WORKER_EVENTS

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.events import Event

WORKER_EVENTS_READ = 1000
"""Newest worker events ``workers`` reads."""


@dataclass(frozen=True, slots=True)
class CurrentTask:
    """A task a worker's process is running."""

    id: str
    task: str
    process: str


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker (supervisor) as its latest events show it."""

    name: str
    """``hostname:pid`` of the supervisor."""
    hostname: str
    pid: int | None
    heartbeat: float
    """Unix seconds of its newest sign of life (heartbeat or ``worker-online``)."""
    age: float
    """Seconds since ``heartbeat``."""
    alive: bool
    """Whether ``age`` is within ``MISSED_BEATS`` heartbeat intervals."""
    started: float | None = None
    """When it sent ``worker-online``, if that event is still among those read."""
    concurrency: int | None = None
    queues: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    """Names of its processes (as task events show them)."""
    active: int = 0
    processed: int = 0
    """Tasks done since it started."""
    load: tuple[float, ...] = ()
    current: tuple[CurrentTask, ...] = ()


def _current(extra: Mapping[str, Any]) -> tuple[CurrentTask, ...]:
    out = []
    for item in extra.get("running") or ():
        if isinstance(item, Mapping):
            id, task = item.get("id"), item.get("task")
            if isinstance(id, str) and isinstance(task, str):
                out.append(CurrentTask(id, task, str(item.get("process", ""))))
    return tuple(out)


def _view(name: str, events: list[Event], now: float, window: float) -> WorkerView:
    """A worker from its events, oldest first (none is ``worker-offline``)."""
    host, _, pid = name.rpartition(":")
    online = next((e for e in reversed(events) if e.type == EventType.WORKER_ONLINE), None)
    beat = next((e for e in reversed(events) if e.type == EventType.WORKER_HEARTBEAT), None)
    last = events[-1].time
    fields: dict[str, Any] = {"pid": int(pid) if pid.isdigit() else None}
    # worker-online says who the worker is; heartbeats repeat it (and when it was
    # sent), for workers whose worker-online is older than the events read
    who = online or (beat if beat is not None and "hostname" in beat.extra else None)
    if who is not None:
        who_pid = who.extra.get("pid")
        if isinstance(who_pid, int) and not isinstance(who_pid, bool):
            fields["pid"] = who_pid
        started = online.time if online is not None else who.extra.get("started")
        fields.update(
            hostname=str(who.extra.get("hostname") or host),
            started=started if isinstance(started, int | float) else None,
            concurrency=who.extra.get("concurrency"),
            queues=tuple(who.extra.get("queues") or ()),
        )
    if beat is not None:
        fields.update(
            children=tuple(beat.extra.get("processes") or ()),
            active=int(beat.extra.get("active") or 0),
            processed=int(beat.extra.get("processed") or 0),
            load=tuple(beat.extra.get("load") or ()),
            current=_current(beat.extra),
        )
    age = max(now - last, 0.0)
    fields.setdefault("hostname", host or name)
    return WorkerView(
        name=name,
        heartbeat=last,
        age=age,
        alive=age <= window,
        **fields,
    )


def workers(app: GopherQ, *, stale: bool = False, now: float | None = None) -> list[WorkerView]:
    """The workers that sent events lately and not ``worker-offline`` since, by name;
    only those alive unless ``stale``.

    Raises ``ConfigurationError`` when the app's events are off.
    """
    now = time.time() if now is None else now
    window = MISSED_BEATS * app.settings.worker_heartbeat
    by_worker: dict[str, list[Event]] = {}
    since = None if stale else now - window
    for event in app.events.last(WORKER_EVENTS_READ, WORKER_EVENTS, since=since):
        if event.worker is None:
            continue
        if event.type == EventType.WORKER_OFFLINE:
            by_worker.pop(event.worker, None)
        else:
            by_worker.setdefault(event.worker, []).append(event)
    views = [_view(name, events, now, window) for name, events in sorted(by_worker.items())]
    return [v for v in views if stale or v.alive]
