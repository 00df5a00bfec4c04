"""Throughput and latency of gopherq on the SQLite broker with a real ``-c 2`` worker.

::

    python benchmarks/bench_sqlite.py [--json] [--tasks N] [--round-trips N] [-c N]

Measures, on a fresh SQLite file in a temporary directory:

enqueue      ``--tasks`` single ``.delay()`` calls of a no-op task, one after another
drain        the same no-op tasks (results ignored) run by a worker started after
             all were enqueued: from starting the worker to an empty queue
round trip   ``--round-trips`` sequential ``.delay().get()`` against the running
             worker: p50, p95, p99
worker RSS   supervisor plus children, after the round trips (psutil)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gopherq import GopherQ

HERE = Path(__file__).resolve().parent
QUEUE = "bench"


def make_app() -> GopherQ:
    """The benchmark app. Its broker comes from ``GOPHERQ_BROKER_URL``."""
    app = GopherQ("bench", default_queue=QUEUE)

    @app.task(name="bench.noop", ignore_result=True)
    def noop() -> None:
        """Do nothing; no result is stored."""

    @app.task(name="bench.echo")
    def echo(value: int) -> int:
        """Return the argument."""
        return value

    return app


app = make_app()  # what the worker loads: ``-A bench_sqlite``


def start_worker(concurrency: int) -> subprocess.Popen[bytes]:
    """``gopherq worker -A bench_sqlite -c N`` in this directory."""
    argv = [sys.executable, "-m", "gopherq", "worker", "-A", "bench_sqlite", "-l", "WARNING"]
    return subprocess.Popen([*argv, "-c", str(concurrency), "-Q", QUEUE], cwd=HERE)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def outstanding(bench: GopherQ) -> int:
    """Messages of the bench queue not yet finished."""
    queue = bench.broker.stats().get(QUEUE)
    return 0 if queue is None else queue.ready + queue.scheduled + queue.running


def percentile(sorted_values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of already sorted values, nearest rank."""
    index = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    import psutil  # type: ignore[import-untyped]

    process = psutil.Process(pid)
    processes = [process, *process.children(recursive=True)]
    return float(sum(p.memory_info().rss for p in processes)) / 2**20


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
        while outstanding(bench):
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with code {worker.returncode}")
            time.sleep(0.02)
        drain_seconds = time.perf_counter() - start

        for i in range(10):  # warm-up: connections, imports, caches
            echo.delay(i).get(timeout=30)
        latencies = []
        for i in range(round_trips):
            start = time.perf_counter()
            echo.delay(i).get(timeout=30)
            latencies.append((time.perf_counter() - start) * 1000)
        rss = rss_mib(worker.pid)
    finally:
        stop_worker(worker)
    latencies.sort()
    return {
        "tasks": tasks,
        "concurrency": concurrency,
        "enqueue_per_s": tasks / enqueue_seconds,
        "drain_per_s": tasks / drain_seconds,
        "round_trip_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "mean": statistics.fmean(latencies),
        },
        "worker_rss_mib": rss,
        "cpus": os.cpu_count(),
    }


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
    header = ("metric", "gopherq", "target", "huey")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    note = f"SQLite broker, worker -c {figures['concurrency']}, {figures['cpus']} CPUs"
    return "\n".join([note, *lines])


def main() -> int:
    """Parse options, run in a fresh temporary SQLite file, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks to enqueue and drain")
    parser.add_argument("--round-trips", type=int, default=300, help="sequential round trips")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="worker processes")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gopherq-bench-") as tmp:
        os.environ["GOPHERQ_BROKER_URL"] = f"sqlite:///{Path(tmp) / 'bench.db'}"
        figures = run(options.tasks, options.round_trips, options.concurrency)
    print(json.dumps(figures, indent=2) if options.json else table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
