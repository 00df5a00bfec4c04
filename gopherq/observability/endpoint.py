"""``gopherq worker --metrics-port``: the metrics endpoint as the supervisor runs it.

The supervisor makes one ``WorkerEndpoint`` before forking (it binds the port,
so that a port in use stops the worker before any process starts), tells it
which block each forked process counts into and when a process exits, and
closes it last. The endpoint reads the supervisor's state through a
``WorkerView`` it asks for on each request, from the server's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gopherq.brokers import open_broker
from gopherq.observability.metrics import WorkerMetrics, WorkerView
from gopherq.observability.server import BrokerCheck, MetricsServer

if TYPE_CHECKING:
    from gopherq.app import GopherQ

LIVE_STALE = 30.0
"""Seconds without a round of the supervisor loop after which ``/live`` answers 503."""


class WorkerEndpoint:
    """Counts the tasks of a worker of ``concurrency`` processes and serves /metrics,
    /live and /ready on ``host:port`` (``OSError`` if the port is taken)."""

    def __init__(
        self,
        app: GopherQ,
        queues: Sequence[str],
        concurrency: int,
        *,
        host: str,
        port: int,
        view: Callable[[], WorkerView],
    ) -> None:
        self.app = app
        self.metrics = WorkerMetrics(app, queues, concurrency)
        self._view = view
        self._probe = open_broker(app.broker_url)  # a connection of its own, opened on use
        self._broker = BrokerCheck(self._probe)
        try:
            self.server = MetricsServer(
                host, port, self.metrics.registry(view), self.live, self.ready
            )
        except OSError:
            self._probe.close()
            raise
        self.url = self.server.url
        self.metrics.attach_supervisor()
        app.middleware.add(self.metrics.middleware)
        self.server.start()

    def in_child(self, block: int | None) -> None:
        """In a forked process: count into ``block``, or (None: the ``-B`` beat) nothing."""
        if block is None:
            self.metrics.middleware.detach()
        else:
            self.metrics.middleware.attach(block)

    def exited(self, block: int, restart: str | None) -> None:
        """The process of ``block`` exited; ``restart``: why it is replaced, if it is."""
        self.metrics.exited(block, restart)

    def live(self) -> str | None:
        """``/live``: the supervisor loop went round within ``LIVE_STALE`` seconds (or
        has not started yet: the worker is starting)."""
        tick = self._view().tick
        if tick is not None and time.monotonic() - tick > LIVE_STALE:
            return f"the supervisor loop has not run for {time.monotonic() - tick:.0f}s"
        return None

    def ready(self) -> str | None:
        """``/ready``: every process slot filled, not stopping, and the broker answers."""
        view = self._view()
        if view.stopping:
            return "the worker is stopping"
        if view.children < view.expected:
            missing = view.expected - view.children
            return f"{missing} of {view.expected} processes are not running"
        return self._broker()

    def close(self) -> None:
        """Stop serving and counting (in the supervisor)."""
        self.server.close()
        self._probe.close()
        self.app.middleware.remove(self.metrics.middleware)
