"""What the supervisor tells middleware about its worker: start, heartbeats, stop,
and tasks lost with a process that died.

With the event emitter installed these become ``worker-online``,
``worker-heartbeat`` (counts read from the children's slots, and the load
average), ``worker-offline`` and ``task-retried`` (reason ``WORKER_LOST``).
With no middleware installed every call returns at once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gopherq.message import Message
from gopherq.middleware import WorkerInfo, WorkerStats
from gopherq.worker.slots import Holding, Running

if TYPE_CHECKING:
    from gopherq.app import GopherQ


class Presence:
    """One supervisor's worker, as the app's middleware sees it."""

    def __init__(self, app: GopherQ, name: str, concurrency: int, queues: Sequence[str]) -> None:
        self.app = app
        self.info = WorkerInfo(name, socket.gethostname(), os.getpid(), concurrency, tuple(queues))
        self.interval = app.settings.worker_heartbeat
        self._next_beat = time.monotonic() + self.interval
        self._processed = 0  # by processes that exited

    def start(self) -> None:
        """The worker's processes are up."""
        if self.app.middleware:
            self.app.middleware.worker_start(self.app, self.info)
        self._next_beat = time.monotonic() + self.interval

    def due(self) -> bool:
        """Whether a heartbeat is due (never without middleware)."""
        return bool(self.app.middleware) and time.monotonic() >= self._next_beat

    def beat(self, processes: Sequence[tuple[str, Holding]]) -> None:
        """Send a heartbeat with counts from the live processes' ``(name, holding)``."""
        self._next_beat = time.monotonic() + self.interval
        stats = WorkerStats(
            processes=tuple(name for name, _ in processes),
            active=sum(holding.running is not None for _, holding in processes),
            processed=self._processed + sum(holding.processed for _, holding in processes),
            load=os.getloadavg(),
            running=tuple(
                (name, holding.running.delivery.id, holding.running.task)
                for name, holding in processes
                if holding.running is not None and holding.running.recorded
            ),
        )
        self.app.middleware.worker_heartbeat(self.app, self.info, stats)

    def exited(self, holding: Holding) -> None:
        """A process exited; keep its count."""
        self._processed += holding.processed

    def lost(self, process: str, running: Running, how: str) -> None:
        """``process`` died (``how``) running a task, which goes back to the queue."""
        if self.app.middleware:
            delivery = running.delivery
            message = Message(
                delivery.id, running.task, queue=delivery.queue, attempt=delivery.attempt
            )
            error = f"its process died ({how}) while running it"
            self.app.middleware.on_lost(self.app, message, process, error)

    def stop(self) -> None:
        """The worker stopped gracefully."""
        if self.app.middleware:
            self.app.middleware.worker_stop(self.app, self.info)
