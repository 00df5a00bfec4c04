"""Throughput and latency of gopherq on Redis, optionally side by side with Celery 5.

::

    pip install -e '.[bench]'
    python benchmarks/bench_redis.py [--celery] [--json] [--tasks N] [--bulk N]
                                     [--round-trips N] [-c N] [--url URL] [--celery-url URL]
                                     [--worker-args '--metrics-port 0'] [--events on]
                                     [--results]

Each task does one Redis ``INCR`` on a counter and returns. With a real worker
subprocess (``python -m gopherq worker -c 2``; with ``--celery`` also
``celery worker -P prefork -c 2``, msgpack, on the same Redis), it measures:

enqueue       ``--tasks`` single ``.delay()`` calls, one after another, no worker running
bulk enqueue  ``--bulk`` tasks in batches of 1,000: ``app.send_many``; Celery has no
              batch publish, so there a loop of ``apply_async(producer=...)`` over one
              producer per batch (faster than ``group(...).apply_async()``)
drain         every task enqueued above (results ignored; with ``--results`` gopherq
              stores each one's record, the write path of the job history), run by a
              worker started after all were enqueued: from the first ``INCR`` to the
              last, so that worker start-up (reported apart) is not counted
round trip    ``--round-trips`` sequential ``.delay().get()`` of the same INCR with its
              result stored, after 10 to warm up: p50, p95, p99
worker RSS    supervisor (Celery: main process) plus children, after the round trips

For scale, each run also times a loop with no framework at all: ``--tasks`` plain
redis-py ``LPUSH`` calls of a body the size of a gopherq message, the floor for
one round trip per call on this machine; the enqueue figure is also given as a
fraction of it.

Without ``--url`` it starts a ``redis-server`` of its own on a free loopback port
(no persistence) and stops it at the end. gopherq runs on ``--url`` (database 13
of the private server by default) under a key prefix of its own, Celery on
``--celery-url`` (database 14 of the same server by default) under a
``global_keyprefix`` of its own; the keys of both are deleted at the end (SCAN
and DEL, never FLUSHDB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import _counter
import redis
import redis.utils
from _common import (
    HERE,
    database,
    latency_summary,
    redis_url,
    rss_mib,
    start_gopherq_worker,
    stop_worker,
    table,
    time_calls,
    wait_until,
)

from gopherq import GopherQ

QUEUE = "bench"
BATCH = 1000
WARM_UP = 10


def make_app() -> GopherQ:
    """The benchmark app. Its broker comes from ``GOPHERQ_BROKER_URL``."""
    app = GopherQ("bench", default_queue=QUEUE)

    @app.task(name="bench.incr", ignore_result=True)
    def incr() -> int:
        """One INCR; no result is stored."""
        return _counter.incr()

    @app.task(name="bench.incr_get")
    def incr_get() -> int:
        """One INCR; the count is the result."""
        return _counter.incr()

    return app


app = make_app()  # what the worker loads: ``-A bench_redis``


@dataclass
class Side:
    """One framework under test: how to send, wait and start its worker."""

    name: str
    delay: Callable[[], object]
    send_batch: Callable[[int], object]
    round_trip: Callable[[], object]
    start_worker: Callable[[], subprocess.Popen[bytes]]
    close: Callable[[], None]


def gopherq_side(
    url: str, concurrency: int, extra: Sequence[str] = (), *, results: bool = False
) -> Side:
    os.environ["GOPHERQ_BROKER_URL"] = url
    bench = make_app()
    incr, incr_get = bench.get_task("bench.incr"), bench.get_task("bench.incr_get")
    sent = incr_get if results else incr
    return Side(
        "gopherq",
        delay=sent.delay,
        send_batch=lambda n: bench.send_many([sent.s() for _ in range(n)]),
        round_trip=lambda: incr_get.delay().get(timeout=30),
        start_worker=lambda: start_gopherq_worker("bench_redis", concurrency, QUEUE, extra),
        close=bench.close,
    )


def celery_side(url: str, prefix: str, concurrency: int) -> Side:
    os.environ["GQBENCH_CELERY_URL"] = url
    os.environ["GQBENCH_CELERY_PREFIX"] = prefix
    import _celery_app

    incr, incr_get = _celery_app.incr, _celery_app.incr_get
    argv = [sys.executable, "-m", "celery", "-A", "_celery_app", "worker", "-P", "prefork"]
    argv += ["-c", str(concurrency), "-Q", QUEUE, "-l", "WARNING"]
    # Start-up chatter only (no effect on tasks): off, as tuned deployments run it.
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    env = {**os.environ, "PYTHONPATH": str(HERE)}

    def send_batch(count: int) -> None:
        with _celery_app.app.producer_or_acquire() as producer:
            for _ in range(count):
                incr.apply_async(producer=producer)

    return Side(
        "celery",
        delay=incr.delay,
        send_batch=send_batch,
        round_trip=lambda: incr_get.delay().get(timeout=30),
        # Its start-up banner goes to stdout: dropped; warnings and errors stay.
        start_worker=lambda: subprocess.Popen(argv, cwd=HERE, env=env, stdout=subprocess.DEVNULL),
        close=_celery_app.app.close,
    )


def bare_loop(url: str, key: str, tasks: int) -> float:
    """LPUSHes per second of a plain redis-py loop (see the module docstring)."""
    client = redis.Redis.from_url(url)
    body = os.urandom(90)  # the encoded message of a task without arguments
    try:
        start = time.perf_counter()
        for _ in range(tasks):
            client.lpush(key, body)
        return tasks / (time.perf_counter() - start)
    finally:
        client.delete(key)
        client.close()


def measure(side: Side, tasks: int, bulk: int, round_trips: int) -> dict[str, Any]:
    """Every figure for one side; see the module docstring."""
    _counter.reset()
    start = time.perf_counter()
    for _ in range(tasks):
        side.delay()
    enqueue_seconds = time.perf_counter() - start

    start = time.perf_counter()
    for first in range(0, bulk, BATCH):
        side.send_batch(min(BATCH, bulk - first))
    bulk_seconds = time.perf_counter() - start

    total = tasks + bulk
    launched = time.perf_counter()
    worker = side.start_worker()
    try:
        first_done = wait_until(lambda: _counter.value() > 0, worker, interval=0.001)
        last_done = wait_until(lambda: _counter.value() >= total, worker)
        for _ in range(WARM_UP):
            side.round_trip()
        latencies = time_calls(side.round_trip, round_trips)
        rss = rss_mib(worker.pid)
    finally:
        stop_worker(worker)
        side.close()
    return {
        "enqueue_per_s": tasks / enqueue_seconds,
        "bulk_enqueue_per_s": bulk / bulk_seconds if bulk else 0.0,
        "drain_per_s": total / (last_done - first_done),
        "drained": total,
        "worker_start_s": first_done - launched,
        "round_trip_ms": latency_summary(latencies),
        "worker_rss_mib": rss,
    }


# label, figure (a path into the figures), absolute target, target as a ratio to Celery
ROWS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("enqueue (tasks/s)", ("enqueue_per_s",), ">= 8,500", ">= 4x"),
    ("bulk enqueue (tasks/s)", ("bulk_enqueue_per_s",), ">= 60,000", ""),
    ("drain (tasks/s)", ("drain_per_s",), ">= 7,000", ">= 6x"),
    ("worker start (s)", ("worker_start_s",), "", ""),
    ("round trip p50 (ms)", ("round_trip_ms", "p50"), "<= 0.6", "<= 0.3x"),
    ("round trip p95 (ms)", ("round_trip_ms", "p95"), "", ""),
    ("round trip p99 (ms)", ("round_trip_ms", "p99"), "", ""),
    ("worker RSS (MiB)", ("worker_rss_mib",), "", ""),
)


def figure(figures: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = figures
    for part in path:
        value = value[part]
    return float(value)


def ratios(ours: dict[str, Any], celery: dict[str, Any]) -> dict[str, float]:
    """gopherq / Celery for every figure (above 1 is better for rates, worse for times)."""
    return {"_".join(path): figure(ours, path) / figure(celery, path) for _, path, _, _ in ROWS}


def render(report: dict[str, Any]) -> str:
    """The report as a table."""
    ours, celery = report["gopherq"], report.get("celery")

    def ratio(path: tuple[str, ...]) -> str:
        return f"{report['ratios']['_'.join(path)]:.2f}x"

    def cell(figures: dict[str, Any], path: tuple[str, ...]) -> str:
        value = figure(figures, path)
        return f"{value:,.0f}" if path[0].endswith("per_s") else f"{value:,.2f}"

    if celery:
        header = ["metric", "gopherq", "celery", "ratio", "target", "ratio target"]
        lines = [
            [label, cell(ours, path), cell(celery, path), ratio(path), target, ratio_target]
            for label, path, target, ratio_target in ROWS
        ]
    else:
        header = ["metric", "gopherq", "target"]
        lines = [[label, cell(ours, path), target] for label, path, target, _ in ROWS]
    info = report["environment"]
    note = (
        f"Redis {info['redis']} at {info['host']}, worker -c {info['concurrency']}, "
        f"{info['cpus']} CPUs, Python {info['python']}, hiredis {info['hiredis']}, "
        f"events {info['events']}; "
        f"{info['tasks']:,} + {info['bulk']:,} tasks, {info['round_trips']} round trips"
    )
    bare = report["bare_lpush_per_s"]
    scale = (
        f"for scale, a plain redis-py LPUSH loop: {bare:,.0f}/s; "
        f"gopherq's enqueue is {ours['enqueue_per_s'] / bare:.2f} of it"
    )
    return "\n".join([note, table(header, lines), scale])


def delete_keys(url: str, pattern: str) -> int:
    """Delete the keys matching ``pattern`` (SCAN, never FLUSHDB); how many."""
    client = redis.Redis.from_url(url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


def with_query(url: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def main() -> int:
    """Parse options, run gopherq (and Celery), print the figures, delete the keys."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celery", action="store_true", help="also run Celery 5, side by side")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--tasks", type=int, default=10_000, help="single .delay() calls")
    parser.add_argument("--bulk", type=int, default=20_000, help="tasks sent in batches")
    parser.add_argument("--round-trips", type=int, default=300, help="sequential round trips")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--url", default=None, help="Redis for gopherq (default: a private redis-server)"
    )
    parser.add_argument(
        "--celery-url", default=None, help="Redis for Celery (default: database 14 of --url's)"
    )
    parser.add_argument(
        "--events",
        choices=("on", "off"),
        default="off",
        help="gopherq's lifecycle events (off: like Celery, which sends no task-sent events)",
    )
    parser.add_argument(
        "--results", action="store_true", help="gopherq's drained tasks store their records"
    )
    parser.add_argument("--worker-args", default="", help="more gopherq worker options")
    options = parser.parse_args()
    os.environ["GOPHERQ_EVENTS"] = "broker" if options.events == "on" else "off"
    with redis_url(options.url) as url:
        options.url = url
        options.celery_url = options.celery_url or database(url, 14)
        return run(options)


def run(options: argparse.Namespace) -> int:
    """Run gopherq (and Celery) on the Redis of ``options.url``; print; delete the keys."""

    run = uuid.uuid4().hex[:8]
    prefix = f"gqbench-{run}"
    os.environ[_counter.URL_VARIABLE] = options.url
    os.environ[_counter.KEY_VARIABLE] = f"{prefix}:counter"
    server = redis.Redis.from_url(options.url)
    info = server.info("server")
    connection = server.connection_pool.connection_kwargs
    server.close()
    report: dict[str, Any] = {
        "environment": {
            "redis": info["redis_version"],
            "host": f"{connection.get('host', 'unix')}:{connection.get('port', '')}",
            "concurrency": options.concurrency,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "hiredis": "yes" if redis.utils.HIREDIS_AVAILABLE else "no",
            "events": options.events,
            "results": options.results,
            "tasks": options.tasks,
            "bulk": options.bulk,
            "round_trips": options.round_trips,
        }
    }
    try:
        report["bare_lpush_per_s"] = bare_loop(options.url, f"{prefix}:bare", options.tasks)
        extra = shlex.split(options.worker_args)
        side = gopherq_side(
            with_query(options.url, prefix=prefix),
            options.concurrency,
            extra,
            results=options.results,
        )
        report["gopherq"] = measure(side, options.tasks, options.bulk, options.round_trips)
        if options.celery:
            side = celery_side(options.celery_url, f"{prefix}:", options.concurrency)
            report["celery"] = measure(side, options.tasks, options.bulk, options.round_trips)
            report["ratios"] = ratios(report["gopherq"], report["celery"])
    finally:
        delete_keys(options.url, f"{prefix}:*")
        if options.celery:
            delete_keys(options.celery_url, f"{prefix}:*")
    print(json.dumps(report, indent=2) if options.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
