"""Cost of settling finished batches: job records stored and deliveries acked, fenced.

::

    python benchmarks/bench_settle.py [--batches N] [--batch N] [--url REDIS_URL] [--json]

Runs in this process, without a worker: reserves ``--batch`` messages at a time
and settles them as a worker's flush does (``gopherq.worker.settle``), each with
a SUCCEEDED record, and reports the round trips per batch (SQLite write
transactions, Redis pipelines sent) and the microseconds per task (10th
percentile and median of the batches). Three set-ups:

sqlite          SQLite broker and its own result store: one transaction
redis           Redis broker and its own result store: one script per queue
redis-foreign   Redis broker, result store in another database: the broker is
                asked which deliveries it holds, then the records are stored,
                then the deliveries are acked
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import database, redis_url, table

from gopherq import GopherQ, State
from gopherq.brokers import Envelope
from gopherq.results.base import JobRecord
from gopherq.runner import Outcome
from gopherq.stores.redis import Connection
from gopherq.stores.sqlite import Database
from gopherq.worker.settle import Finished, Settler


@contextmanager
def counting(owner: type, name: str) -> Iterator[list[int]]:
    """Count calls of ``owner.name`` (a round trip each) while the block runs."""
    original = getattr(owner, name)
    count = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    try:
        yield count
    finally:
        setattr(owner, name, original)


def measure(app: GopherQ, batches: int, size: int, count: list[int]) -> dict[str, float]:
    """Settle ``batches`` batches of ``size``; round trips per batch and us per task."""
    settler = Settler(app, "bench")
    app.backend.get("warm-up")  # connections open before the clock starts
    times: list[float] = []
    trips = 0
    for _ in range(batches):
        app.broker.enqueue(
            [Envelope(uuid.uuid4().hex, "bench", 2, b"x" * 100) for _ in range(size)]
        )
        batch = app.broker.reserve(["bench"], size, 1.0)
        now = time.time()
        finished = [Finished(d, "bench.echo", Outcome("ack", _record(d.id, now))) for d in batch]
        before = count[0]
        start = time.perf_counter()
        settler.settle(finished)
        times.append((time.perf_counter() - start) / len(batch) * 1e6)
        trips = count[0] - before
    times.sort()
    return {
        "round_trips_per_batch": trips,
        "us_per_task_p10": times[len(times) // 10],
        "us_per_task_median": statistics.median(times),
    }


def _record(id: str, now: float) -> JobRecord:
    return JobRecord(
        id, "bench.echo", State.SUCCEEDED, "bench", result=b"\x2a", attempts=1,
        created=now, started=now, finished=now,
    )  # fmt: skip


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def delete_prefix(url: str) -> None:
    """Delete this run's keys (SCAN and DEL, never FLUSHDB)."""
    connection = Connection(url)
    try:
        prefix = connection.config.prefix
        for key in list(connection.client.scan_iter(match=prefix + ":*", count=1000)):
            connection.client.delete(key)
    finally:
        connection.close()


def run(batches: int, size: int, url: str) -> dict[str, dict[str, float]]:
    """Every set-up's figures."""
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gopherq-bench-") as tmp:
        app = GopherQ("bench", broker=f"sqlite:///{Path(tmp) / 'b.db'}", events="off")
        with counting(Database, "write") as count:
            figures["sqlite"] = measure(app, batches, size, count)
        app.close()
    prefix = f"gqbench{uuid.uuid4().hex[:8]}"
    own = with_prefix(url, prefix)
    foreign = with_prefix(database(url, 14), prefix)
    setups: list[tuple[str, str]] = [("redis", own), ("redis-foreign", foreign)]
    try:
        for name, backend in setups:
            app = GopherQ("bench", broker=own, backend=backend, events="off")
            with counting(Connection, "send") as count:
                figures[name] = measure(app, batches, size, count)
            app.close()
    finally:
        for keys in (own, foreign):
            delete_prefix(keys)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Parse options, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500, help="batches settled per set-up")
    parser.add_argument("--batch", type=int, default=16, help="deliveries per batch")
    parser.add_argument(
        "--url",
        default=None,
        help="Redis, database 13 and 14 too (default: a private redis-server for the run)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    options = parser.parse_args(argv)
    with redis_url(options.url) as url:
        figures = run(options.batches, options.batch, url)
    if options.json:
        print(json.dumps(figures, indent=2))
        return 0
    rows = [
        (
            name,
            str(f["round_trips_per_batch"]),
            f"{f['us_per_task_p10']:.1f}",
            f"{f['us_per_task_median']:.1f}",
        )
        for name, f in figures.items()
    ]
    print(f"settle of {options.batches} batches of {options.batch} tasks, each with a record")
    print(table(("set-up", "round trips/batch", "us/task p10", "us/task median"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
