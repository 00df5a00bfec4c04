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

``/metrics`` is written by ``Exposition`` rather than prometheus-client's
``generate_latest``: the same text, byte for byte, in a fraction of the time for
thousands of queues (each queue's label text is kept from one scrape to the
next). ``registry_for`` still gives the gauges as a prometheus-client registry.

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
from prometheus_client.utils import floatToGoString

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
        self._exposition = Exposition()

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

    def exposition(self) -> bytes:
        """The body of ``/metrics``: the gauges in the Prometheus text format (what
        ``generate_latest`` writes for ``collect``)."""
        snapshot = self.snapshot()
        with self._lock:  # the label cache is shared by scrapes on other threads
            return self._exposition.render(snapshot)

    def close(self) -> None:
        """Stop the query thread, once a query under way has ended."""
        self._querier.shutdown(wait=True)

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


def _oldest_age(depth: QueueDepth) -> float | None:
    """The age gauge of a queue: 0 when nothing is ready; None (no sample) from a
    broker that cannot tell the age of the ready messages it holds."""
    if depth.oldest_age is None:
        return None if depth.ready else 0.0
    return depth.oldest_age


_UP = ("gopherq_broker_up", "1 if the broker answered the last query.")
_TOOK = ("gopherq_exporter_query_seconds", "Seconds the last query took.")
_ONLINE = ("gopherq_workers_online", "Workers that sent a heartbeat lately.")
_READY = ("gopherq_queue_ready", "Ready messages, by priority.")
_PER_QUEUE: tuple[tuple[str, str, Callable[[QueueDepth], float | None]], ...] = (
    ("gopherq_queue_scheduled", "Messages waiting for their eta.", lambda d: d.scheduled),
    ("gopherq_queue_running", "Messages leased by a worker.", lambda d: d.running),
    ("gopherq_queue_dead", "Dead letters kept.", lambda d: d.dead),
    ("gopherq_queue_paused", "1 while the queue is paused.", lambda d: 1 if d.paused else 0),
    (
        "gopherq_queue_oldest_age_seconds",
        "Seconds the oldest ready message has waited since it became runnable.",
        _oldest_age,
    ),
)
"""The gauges with a ``queue`` label only: name, help, value (None: no sample)."""


def families(snapshot: Snapshot) -> list[GaugeMetricFamily]:
    """The metric families of one snapshot."""
    up = GaugeMetricFamily(*_UP)
    up.add_metric([], 0 if snapshot.depths is None else 1)
    took = GaugeMetricFamily(*_TOOK)
    took.add_metric([], snapshot.seconds)
    out = [up, took]
    if snapshot.workers is not None:
        online = GaugeMetricFamily(*_ONLINE)
        online.add_metric([], snapshot.workers)
        out.append(online)
    if snapshot.depths is not None:
        out += _queue_families(list(snapshot.depths.values()))
    return out


def _queue_families(depths: list[QueueDepth]) -> list[GaugeMetricFamily]:
    ready = GaugeMetricFamily(*_READY, labels=["queue", "priority"])
    for depth in depths:
        for priority, count in _every_priority(depth.ready):
            ready.add_metric([depth.name, priority_label(priority)], count)
    out = [ready]
    for name, text, read in _PER_QUEUE:
        family = GaugeMetricFamily(name, text, labels=["queue"])
        for depth in depths:
            found = read(depth)
            if found is not None:
                family.add_metric([depth.name], found)
        out.append(family)
    return out


class Exposition:
    """Writes snapshots in the Prometheus text format, as ``generate_latest`` writes
    ``families(snapshot)``, for a fraction of its cost: label text is built once per
    queue and kept while the queue is there, counts are formatted once per value."""

    _KEEP_NUMBERS = 4096
    """Formatted counts kept between scrapes, at most."""

    def __init__(self) -> None:
        self._labels: dict[str, str] = {}  # queue -> its escaped label value
        self._numbers: dict[int, str] = {}  # count -> its text

    def render(self, snapshot: Snapshot) -> bytes:
        """The text of one snapshot."""
        out: list[str] = []
        _sample(out, *_UP, 0 if snapshot.depths is None else 1)
        _sample(out, *_TOOK, snapshot.seconds)
        if snapshot.workers is not None:
            _sample(out, *_ONLINE, snapshot.workers)
        if snapshot.depths is not None:
            self._queues(out, list(snapshot.depths.values()))
        return "".join(out).encode()

    def _queues(self, out: list[str], depths: list[QueueDepth]) -> None:
        # Rebuilt each time, so that queues that are gone drop out.
        known = self._labels
        self._labels = {d.name: known.get(d.name) or _escape(d.name) for d in depths}
        labels = [self._labels[d.name] for d in depths]
        if len(self._numbers) > self._KEEP_NUMBERS:
            self._numbers.clear()
        number = self._number
        name = _READY[0]
        out.append(_header(*_READY))
        for depth, label in zip(depths, labels, strict=True):
            for priority, count in _every_priority(depth.ready):
                # (a priority's label is a lower-case name or a number: nothing to escape)
                out.append(
                    f'{name}{{priority="{priority_label(priority)}",queue="{label}"}} '
                    f"{number(count)}\n"
                )
        for name, text, read in _PER_QUEUE:
            out.append(_header(name, text))
            for depth, label in zip(depths, labels, strict=True):
                found = read(depth)
                if found is not None:
                    out.append(f'{name}{{queue="{label}"}} {number(found)}\n')

    def _number(self, value: float) -> str:
        if type(value) is not int:
            return _go(value)
        text = self._numbers.get(value)
        if text is None:
            text = self._numbers[value] = _go(value)
        return text


def _header(name: str, text: str) -> str:
    return f"# HELP {name} {text}\n# TYPE {name} gauge\n"


def _sample(out: list[str], name: str, text: str, value: float) -> None:
    out.append(f"{_header(name, text)}{name} {_go(value)}\n")


def _go(value: float) -> str:
    """A sample value as prometheus-client writes it (Go's formatting of floats)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    """A label value as the text format writes it (as prometheus-client escapes it)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


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
    collector = BrokerCollector(app, cache_seconds=cache_seconds)
    try:
        server = _ExporterServer(host, port, collector, BrokerCheck(app.broker))
    except OSError as exc:
        collector.close()
        hint = "; choose another with --port" if exc.errno == errno.EADDRINUSE else ""
        in_use = " (another exporter?)" if hint else ""
        raise ConfigurationError(cannot_serve(host, port, exc) + in_use + hint) from None
    server.start()
    return server


class _ExporterServer(MetricsServer):
    """A ``MetricsServer`` whose ``/metrics`` is ``collector.exposition()``; closing it
    stops the collector's query thread too."""

    def __init__(self, host: str, port: int, collector: BrokerCollector, ready: BrokerCheck):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        self.collector = collector
        super().__init__(host, port, registry, all_well, ready)

    def close(self) -> None:
        """Stop serving, release the port and stop the query thread."""
        try:
            super().close()
        finally:
            self.collector.close()

    def _metrics(self) -> bytes:
        return self.collector.exposition()


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
