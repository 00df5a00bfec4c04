"""``gopherq exporter``: the broker's gauges for Prometheus, one process per deployment.

Workers serve their own counters (``gopherq worker --metrics-port``); what the
broker holds (queue depths, dead letters, paused queues, the oldest waiting
message, workers online) is the same whichever worker one asks, so it is served
once, here, and never multiplied by the number of workers.

Nothing polls in the background: a scrape asks the broker (``queue_depths``, one
query or one round trip) and the event log (``WorkerRoll``, only what was logged
since the last scrape). Scrapes within ``CACHE_SECONDS`` of one another, such as
two Prometheus servers scraping together, share one answer. A broker that does not
answer makes ``gopherq_broker_up`` 0 and leaves the queue gauges out; the exporter
keeps serving.

Metrics::

    gopherq_queue_ready{queue,priority}        ready messages (due etas and expired
                                               leases included, as in ``stats``)
    gopherq_queue_scheduled{queue}             waiting for their eta
    gopherq_queue_running{queue}               leased by a worker
    gopherq_queue_dead{queue}                  dead letters kept
    gopherq_queue_paused{queue}                1 while paused
    gopherq_queue_oldest_age_seconds{queue}    how long the oldest ready message has
                                               waited since it became runnable (0: none)
    gopherq_workers_online                     workers with a recent heartbeat (left
                                               out when the app's events are off)
    gopherq_broker_up                          1 if the broker answered this scrape
    gopherq_exporter_query_seconds             how long the broker took to answer
"""

from __future__ import annotations

import errno
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gopherq.brokers.base import QueueDepth
from gopherq.errors import ConfigurationError
from gopherq.observability.server import BrokerCheck, MetricsServer, all_well, cannot_serve
from gopherq.observability.workers import WorkerRoll
from gopherq.redaction import redact_text
from gopherq.states import Priority

if TYPE_CHECKING:
    from gopherq.app import GopherQ

logger = logging.getLogger("gopherq.exporter")

CACHE_SECONDS = 1.0
"""Scrapes this close together share one broker query."""
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one broker query found."""

    depths: dict[str, QueueDepth] | None
    """None: the broker did not answer."""
    workers: int | None
    """None: events are off, or the event log did not answer."""
    seconds: float
    """How long the queries took."""


class BrokerCollector(Collector):
    """A prometheus-client collector that asks the app's broker at scrape time."""

    def __init__(
        self,
        app: GopherQ,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._roll = WorkerRoll(app) if app.events.enabled else None
        self._last: tuple[float, Snapshot] | None = None
        # The HTTP server answers each scrape on a new thread; the queries run on this
        # one, so that they reuse one connection (SQLite opens one per thread, with its
        # own page cache: a fresh one would read the indexes from the file again).
        self._querier = ThreadPoolExecutor(1, thread_name_prefix="gopherq-exporter")

    def snapshot(self) -> Snapshot:
        """The broker's state: cached if younger than ``cache_seconds``, else queried.

        Concurrent callers wait for one query rather than each sending their own.
        """
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self.cache_seconds:
                return self._last[1]
            snapshot = self._querier.submit(self._query).result()
            self._last = (self._clock(), snapshot)
            return snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges of the module docstring."""
        return iter(families(self.snapshot()))

    def _query(self) -> Snapshot:
        start = time.perf_counter()
        depths: dict[str, QueueDepth] | None = None
        try:
            depths = self.app.broker.queue_depths()
        except Exception as exc:  # an exporter reports the broker down, it does not fail
            logger.warning("broker query failed: %s", redact_text(str(exc)))
        workers: int | None = None
        if self._roll is not None:
            try:
                workers = self._roll.online()
            except Exception as exc:
                logger.warning("reading worker events failed: %s", redact_text(str(exc)))
        return Snapshot(depths, workers, time.perf_counter() - start)


def families(snapshot: Snapshot) -> list[GaugeMetricFamily]:
    """The metric families of one snapshot."""
    up = GaugeMetricFamily("gopherq_broker_up", "1 if the broker answered the last query.")
    up.add_metric([], 0 if snapshot.depths is None else 1)
    took = GaugeMetricFamily("gopherq_exporter_query_seconds", "Seconds the last query took.")
    took.add_metric([], snapshot.seconds)
    out = [up, took]
    if snapshot.workers is not None:
        online = GaugeMetricFamily(
            "gopherq_workers_online", "Workers that sent a heartbeat lately."
        )
        online.add_metric([], snapshot.workers)
        out.append(online)
    if snapshot.depths is not None:
        out += _queue_families(list(snapshot.depths.values()))
    return out


def _queue_families(depths: list[QueueDepth]) -> list[GaugeMetricFamily]:
    queue = ["queue"]
    ready = GaugeMetricFamily(
        "gopherq_queue_ready", "Ready messages, by priority.", labels=["queue", "priority"]
    )
    scheduled = GaugeMetricFamily(
        "gopherq_queue_scheduled", "Messages waiting for their eta.", labels=queue
    )
    running = GaugeMetricFamily(
        "gopherq_queue_running", "Messages leased by a worker.", labels=queue
    )
    dead = GaugeMetricFamily("gopherq_queue_dead", "Dead letters kept.", labels=queue)
    paused = GaugeMetricFamily("gopherq_queue_paused", "1 while the queue is paused.", labels=queue)
    age = GaugeMetricFamily(
        "gopherq_queue_oldest_age_seconds",
        "Seconds the oldest ready message has waited since it became runnable.",
        labels=queue,
    )
    for depth in depths:
        for priority, count in _every_priority(depth.ready):
            ready.add_metric([depth.name, priority_label(priority)], count)
        scheduled.add_metric([depth.name], depth.scheduled)
        running.add_metric([depth.name], depth.running)
        dead.add_metric([depth.name], depth.dead)
        paused.add_metric([depth.name], 1 if depth.paused else 0)
        if depth.oldest_age is not None or not depth.ready:
            age.add_metric([depth.name], depth.oldest_age or 0.0)
    return [ready, scheduled, running, dead, paused, age]


def priority_label(priority: int | None) -> str:
    """A priority as the ``priority`` label shows it: its name (``normal``), else the
    number; '' for a broker that cannot tell priorities apart."""
    if priority is None:
        return ""
    return _PRIORITY_NAMES.get(priority) or str(priority)


_PRIORITY_NAMES = {p.value: p.name.lower() for p in Priority}


def _every_priority(ready: Mapping[int | None, int]) -> list[tuple[int | None, int]]:
    """Ready counts of the five named priorities, 0 where none is ready (so that a
    drained queue's series read 0 rather than vanish), then of any others; from a
    broker that cannot tell priorities apart, its one count."""
    if None in ready:
        return [(None, ready[None])]
    named: list[tuple[int | None, int]] = [(p, ready.get(p, 0)) for p in _PRIORITY_NAMES]
    return named + sorted((p, n) for p, n in ready.items() if p not in _PRIORITY_NAMES)


def registry_for(app: GopherQ, *, cache_seconds: float = CACHE_SECONDS) -> CollectorRegistry:
    """A registry holding only the broker gauges of ``app``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(app, cache_seconds=cache_seconds))
    return registry


def serve(
    app: GopherQ, port: int, host: str = DEFAULT_HOST, *, cache_seconds: float = CACHE_SECONDS
) -> MetricsServer:
    """Serve ``/metrics``, ``/live`` and ``/ready`` for ``app`` on ``host:port`` from a
    background thread; returns the server (``port`` is the port bound, for ``port`` 0).

    ``/ready`` answers 503 while the broker does not. A port in use raises
    ``ConfigurationError`` with one line saying so.
    """
    registry = registry_for(app, cache_seconds=cache_seconds)
    try:
        server = MetricsServer(host, port, registry, all_well, BrokerCheck(app.broker))
    except OSError as exc:
        hint = "; choose another with --port" if exc.errno == errno.EADDRINUSE else ""
        in_use = " (another exporter?)" if hint else ""
        raise ConfigurationError(cannot_serve(host, port, exc) + in_use + hint) from None
    server.start()
    return server


def run(
    app: GopherQ,
    port: int,
    host: str = DEFAULT_HOST,
    *,
    on_ready: Callable[[str], object] = logger.info,
) -> None:
    """Serve until SIGINT or SIGTERM (``gopherq exporter``); ``on_ready`` gets the URL
    of ``/metrics`` once the port is bound."""
    server = serve(app, port, host)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    on_ready(server.url)
    try:
        stop.wait()
    finally:
        server.close()
        app.close()
