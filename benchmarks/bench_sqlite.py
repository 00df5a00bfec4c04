"""Throughput and latency of gopherq on the SQLite broker with a real ``-c 2`` worker.

::

    python benchmarks/bench_sqlite.py [--json] [--tasks N] [--round-trips N] [-c N]
                                      [--events on|off]
    python benchmarks/bench_sqlite.py --compare-events [--repeat N] [--tasks N]
                                      [--drain-task noop|echo] [--json]
    python benchmarks/bench_sqlite.py --compare-tracing [--repeat N] [--tasks N]
                                      [--drain-task noop|echo] [--json]
                                      [--span-processor batch|simple|both]
    python benchmarks/bench_sqlite.py --compare-metrics [--repeat N] [--tasks N] ...

Measures, on a fresh SQLite file in a temporary directory:

enqueue      ``--tasks`` single ``.delay()`` calls of a no-op task, one after another
drain        the same no-op tasks (results ignored) run by a worker started after
             all were enqueued: from starting the worker to an empty queue
round trip   ``--round-trips`` sequential ``.delay().get()`` against the running
             worker: p50, p95, p99
worker RSS   supervisor plus children, after the round trips (psutil)

``--events`` switches lifecycle events on (the default setting) or off.
``--compare-events`` measures only the drain, with events off and on in turn,
``--repeat`` times each on a fresh file, and reports the medians and their
ratio. There the queue is paused while the worker starts, so that the figure
is the drain alone: ``noop`` (no result stored) or ``echo`` (a result each).
``--compare-tracing`` does the same with tracing off, on with no TracerProvider
(the no-op API: what an app pays by default), that and the worker's metrics on
(``--metrics-port 0``; against tracing and metrics both off), and on with the OpenTelemetry SDK
and an ``InMemorySpanExporter`` in the worker processes (and the sender), and
reports the ratios of the last two to the first. The SDK is set up as
docs/observability.md recommends: a ``BatchSpanProcessor`` in front of the
exporter (``--span-processor batch``, the default); ``simple`` measures a
``SimpleSpanProcessor`` (each span exported inline) instead, ``both`` measures
both as two more modes taking turns with the others. ``--compare-metrics`` drains with the
worker's Prometheus metrics off, then on (``--metrics-port 0``).
``--worker-args`` adds options to every worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import (
    cpu_seconds,
    latency_summary,
    rss_mib,
    start_gopherq_worker,
    stop_worker,
    time_calls,
    wait_until,
)
from _common import table as format_table

from gopherq import GopherQ, Middleware

QUEUE = "bench"
SDK = "BENCH_TRACING_SDK"
"""Set in the environment (to ``batch`` or ``simple``, the span processor): worker
processes set up the OpenTelemetry SDK."""
PROCESSORS = ("batch", "simple")


class InMemoryTracing(Middleware):
    """Sets up the OpenTelemetry SDK with an in-memory exporter in each worker process."""

    def worker_process_init(self, app: GopherQ) -> None:
        from opentelemetry import trace

        trace.set_tracer_provider(in_memory_provider(os.environ.get(SDK, "batch")))


def in_memory_provider(processor: str = "batch") -> Any:
    """An SDK TracerProvider exporting to memory: through a ``BatchSpanProcessor``
    (``batch``, as the docs recommend) or, as each span ends, a
    ``SimpleSpanProcessor`` (``simple``)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    kind = BatchSpanProcessor if processor == "batch" else SimpleSpanProcessor
    provider = TracerProvider()
    provider.add_span_processor(kind(InMemorySpanExporter()))
    return provider


def make_app() -> GopherQ:
    """The benchmark app. Its broker comes from ``GOPHERQ_BROKER_URL``."""
    sdk = [InMemoryTracing()] if os.environ.get(SDK) else []
    app = GopherQ("bench", default_queue=QUEUE, middleware=sdk)

    @app.task(name="bench.noop", ignore_result=True)
    def noop() -> None:
        """Do nothing; no result is stored."""

    @app.task(name="bench.echo")
    def echo(value: int) -> int:
        """Return the argument."""
        return value

    return app


app = make_app()  # what the worker loads: ``-A bench_sqlite``


WORKER_ARGS: list[str] = []
"""Options added to every worker's command line (``--worker-args``)."""


def start_worker(concurrency: int, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """``gopherq worker -A bench_sqlite -c N`` in this directory."""
    return start_gopherq_worker("bench_sqlite", concurrency, QUEUE, [*WORKER_ARGS, *extra])


def outstanding(bench: GopherQ) -> int:
    """Messages of the bench queue not yet finished."""
    queue = bench.broker.stats().get(QUEUE)
    return 0 if queue is None else queue.ready + queue.scheduled + queue.running


def run(tasks: int, round_trips: int, concurrency: int) -> dict[str, Any]:
    """Run every measurement; returns the figures."""
    bench = make_app()
    noop, echo = bench.get_task("bench.noop"), bench.get_task("bench.echo")

    start = time.perf_counter()
    for _ in range(tasks):
        noop.delay()
    enqueue_seconds = time.perf_counter() - start

    start = time.perf_counter()
    worker = start_worker(concurrency)
    try:
        drain_seconds = wait_until(lambda: not outstanding(bench), worker, interval=0.02) - start

        for i in range(10):  # warm-up: connections, imports, caches
            echo.delay(i).get(timeout=30)
        latencies = time_calls(lambda: echo.delay(1).get(timeout=30), round_trips)
        rss = rss_mib(worker.pid)
    finally:
        stop_worker(worker)
    return {
        "tasks": tasks,
        "concurrency": concurrency,
        "enqueue_per_s": tasks / enqueue_seconds,
        "drain_per_s": tasks / drain_seconds,
        "round_trip_ms": latency_summary(latencies),
        "worker_rss_mib": rss,
        "cpus": os.cpu_count(),
    }


def paused_drain(
    tasks: int, concurrency: int, task: str, extra: Sequence[str] = ()
) -> tuple[float, float]:
    """Tasks/s of a worker draining ``tasks`` queued ``task`` messages, start-up
    excluded, and the worker's CPU microseconds per task (its supervisor and
    children): on a shared machine the rate swings with the load, the CPU time
    much less."""
    bench = make_app()
    if os.environ.get(SDK):  # the sender traces too, so that messages carry a parent
        from gopherq.observability.tracing import TracingMiddleware

        bench.add_middleware(TracingMiddleware(in_memory_provider(os.environ[SDK])))
    signature = bench.get_task(f"bench.{task}").s
    for first in range(0, tasks, 1000):
        count = min(1000, tasks - first)
        bench.send_many([signature() if task == "noop" else signature(i) for i in range(count)])
    bench.broker.pause(QUEUE)
    worker = start_worker(concurrency, extra)
    try:
        time.sleep(1.5)  # the children reach their first (empty) reserve
        cpu = cpu_seconds(worker.pid)
        start = time.perf_counter()
        bench.broker.resume(QUEUE)
        seconds = wait_until(lambda: not outstanding(bench), worker) - start
        return tasks / seconds, (cpu_seconds(worker.pid) - cpu) / tasks * 1e6
    finally:
        stop_worker(worker)
        bench.close()


def compare_drains(
    modes: dict[str, dict[str, str]],
    tasks: int,
    concurrency: int,
    repeat: int,
    task: str,
    *,
    worker_args: Mapping[str, Sequence[str]] | None = None,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Drain rates under each mode (environment variables to set, and worker options
    in ``worker_args``), the modes taking turns, ``repeat`` times each, each on a
    fresh file; the CPU microseconds per task of each run go into ``cpu``."""
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    saved = dict(os.environ)
    try:
        for _ in range(repeat):
            for mode, environ in modes.items():
                with tempfile.TemporaryDirectory(prefix="gopherq-bench-") as tmp:
                    os.environ["GOPHERQ_BROKER_URL"] = f"sqlite:///{Path(tmp) / 'bench.db'}"
                    os.environ.update(environ)
                    extra = (worker_args or {}).get(mode, ())
                    rate, micros = paused_drain(tasks, concurrency, task, extra)
                    rates[mode].append(rate)
                    if cpu is not None:
                        cpu.setdefault(mode, []).append(micros)
                    for name in environ:
                        os.environ.pop(name)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return rates


def compare_on_off(
    feature: str, tasks: int, concurrency: int, repeat: int, task: str
) -> dict[str, Any]:
    """Drain rates with ``feature`` (events, or metrics) off and on, alternating."""
    if feature == "events":
        modes = {"off": {"GOPHERQ_EVENTS": "off"}, "on": {"GOPHERQ_EVENTS": "broker"}}
        rates = compare_drains(modes, tasks, concurrency, repeat, task)
    else:
        worker_args = {"on": ["--metrics-port", "0"]}
        modes = {"off": {}, "on": {}}
        rates = compare_drains(modes, tasks, concurrency, repeat, task, worker_args=worker_args)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {
        "tasks": tasks,
        "task": task,
        "concurrency": concurrency,
        "drain_per_s": {f"{feature}_off": off, f"{feature}_on": on},
        "runs": rates,
        "ratio": on / off,
        "cpus": os.cpu_count(),
    }


def compare_tracing(
    tasks: int, concurrency: int, repeat: int, task: str, processor: str = "batch"
) -> dict[str, Any]:
    """Drain rates with tracing off, on with the no-op API (alone, and with the worker's
    metrics: ``noop_metrics``), and on with the SDK
    (mode ``sdk``: its span processor ``processor``; with ``both``, modes
    ``sdk`` (batch) and ``sdk_simple``)."""
    modes = {
        "off": {"GOPHERQ_TRACING": "off"},
        "noop": {"GOPHERQ_TRACING": "on"},
        "noop_metrics": {"GOPHERQ_TRACING": "on"},
        "sdk": {"GOPHERQ_TRACING": "on", SDK: "batch" if processor == "both" else processor},
    }
    if processor == "both":
        modes["sdk_simple"] = {"GOPHERQ_TRACING": "on", SDK: "simple"}
    cpu: dict[str, list[float]] = {}
    metrics = {"noop_metrics": ["--metrics-port", "0"]}
    rates = compare_drains(modes, tasks, concurrency, repeat, task, worker_args=metrics, cpu=cpu)
    medians = {mode: statistics.median(runs) for mode, runs in rates.items()}
    cpu_medians = {mode: statistics.median(runs) for mode, runs in cpu.items()}
    off = rates["off"]
    ratios = {
        mode: [run / base for run, base in zip(runs, off, strict=True)]
        for mode, runs in rates.items()
    }
    return {
        "tasks": tasks,
        "task": task,
        "concurrency": concurrency,
        "span_processor": processor,
        "drain_per_s": medians,
        "runs": rates,
        "ratios": {mode: medians[mode] / medians["off"] for mode in modes if mode != "off"},
        "ratio_spread": {
            mode: [min(ratios[mode]), max(ratios[mode])] for mode in modes if mode != "off"
        },
        "cpu_us_per_task": cpu_medians,
        "cpu_runs": cpu,
        "cpu_ratios": {
            mode: cpu_medians["off"] / cpu_medians[mode] for mode in modes if mode != "off"
        },
        "cpus": os.cpu_count(),
    }


_TRACING_MODES = {
    "noop": "no-op API",
    "noop_metrics": "no-op API and metrics",
    "sdk": "SDK in memory",
    "sdk_simple": "SDK in memory, simple processor",
}


def tracing_text(figures: dict[str, Any], options: argparse.Namespace) -> str:
    """One line of ``--compare-tracing`` figures: medians, their ratios to tracing
    off, and the spread of the ratios of single rounds."""
    rates, spread, cpu = figures["drain_per_s"], figures["ratio_spread"], figures["cpu_ratios"]
    processor = "batch" if options.span_processor == "both" else options.span_processor
    names = {**_TRACING_MODES, "sdk": f"SDK in memory, {processor} processor"}
    parts = [
        f"{names[mode]} {rates[mode]:,.0f}/s (ratio {ratio:.2f}, rounds "
        f"{spread[mode][0]:.2f}-{spread[mode][1]:.2f}; CPU ratio {cpu[mode]:.2f})"
        for mode, ratio in figures["ratios"].items()
    ]
    micros = ", ".join(f"{mode} {us:.0f}" for mode, us in figures["cpu_us_per_task"].items())
    return (
        f"drain of {options.tasks:,} {options.drain_task} tasks, worker -c "
        f"{options.concurrency}, median of {options.repeat}: tracing off "
        f"{rates['off']:,.0f}/s, " + ", ".join(parts) + f"; worker CPU us/task: {micros}"
    )


def table(figures: dict[str, Any]) -> str:
    """The figures as a small table beside the targets and Huey's figures.

    Both are for a 2-core machine; Huey's were measured on its SQLite storage.
    """
    trip = figures["round_trip_ms"]
    rows = [
        ("enqueue (tasks/s)", f"{figures['enqueue_per_s']:,.0f}", ">= 5,000", "4,700"),
        ("drain (tasks/s)", f"{figures['drain_per_s']:,.0f}", ">= 3,600", "2,400"),
        ("round trip p50 (ms)", f"{trip['p50']:.2f}", "<= 5", "51"),
        ("round trip p95 (ms)", f"{trip['p95']:.2f}", "", ""),
        ("round trip p99 (ms)", f"{trip['p99']:.2f}", "", ""),
        ("worker RSS (MiB)", f"{figures['worker_rss_mib']:.1f}", "", ""),
    ]
    note = f"SQLite broker, worker -c {figures['concurrency']}, {figures['cpus']} CPUs"
    return "\n".join([note, format_table(("metric", "gopherq", "target", "huey"), rows)])


def main() -> int:
    """Parse options, run in a fresh temporary SQLite file, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks to enqueue and drain")
    parser.add_argument("--round-trips", type=int, default=300, help="sequential round trips")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--events", choices=["on", "off"], default="on", help="lifecycle events")
    parser.add_argument(
        "--compare-events", action="store_true", help="drain with events off, then on"
    )
    parser.add_argument(
        "--compare-tracing", action="store_true", help="drain with tracing off, no-op, SDK"
    )
    parser.add_argument(
        "--compare-metrics", action="store_true", help="drain with metrics off, then on"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each comparison")
    parser.add_argument("--worker-args", default="", help="more worker options, one string")
    parser.add_argument("--drain-task", choices=["noop", "echo"], default="noop")
    parser.add_argument(
        "--span-processor",
        choices=[*PROCESSORS, "both"],
        default="batch",
        help="the SDK's span processor in --compare-tracing",
    )
    options = parser.parse_args()
    WORKER_ARGS[:] = shlex.split(options.worker_args)
    if options.compare_tracing:
        figures = compare_tracing(
            options.tasks,
            options.concurrency,
            options.repeat,
            options.drain_task,
            options.span_processor,
        )
        print(json.dumps(figures, indent=2) if options.json else tracing_text(figures, options))
        return 0
    if options.compare_events or options.compare_metrics:
        feature = "metrics" if options.compare_metrics else "events"
        figures = compare_on_off(
            feature, options.tasks, options.concurrency, options.repeat, options.drain_task
        )
        rates = figures["drain_per_s"]
        text = (
            f"drain of {options.tasks:,} {options.drain_task} tasks, worker -c "
            f"{options.concurrency}, median of {options.repeat}: {feature} off "
            f"{rates[f'{feature}_off']:,.0f}/s, on {rates[f'{feature}_on']:,.0f}/s, "
            f"ratio {figures['ratio']:.2f}"
        )
        print(json.dumps(figures, indent=2) if options.json else text)
        return 0
    os.environ["GOPHERQ_EVENTS"] = "broker" if options.events == "on" else "off"
    with tempfile.TemporaryDirectory(prefix="gopherq-bench-") as tmp:
        os.environ["GOPHERQ_BROKER_URL"] = f"sqlite:///{Path(tmp) / 'bench.db'}"
        figures = run(options.tasks, options.round_trips, options.concurrency)
    figures["events"] = options.events
    print(json.dumps(figures, indent=2) if options.json else table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
