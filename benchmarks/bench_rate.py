"""Rate limits under load: a limited task's observed rate, and what it costs the rest.

Two ``gopherq worker -c 2`` processes consume two queues: ``limited`` holds a backlog
of a task declared ``rate_limit="200/s"`` (``--rate``), ``free`` a batch of no-op tasks
with no limit. Measured, on a fresh broker (a SQLite file, or a private Redis):

* the limited task's observed rate over ``--seconds`` (30), the first second left
  out (the burst and the workers' start), against the declared rate;
* how long the free batch takes to drain meanwhile, against the same drain on a
  fresh broker with no limited task (side by side in this run: their ratio);
* the broker calls per limited task that ran: ``rate_admit`` and ``defer`` (what a
  limit adds), and ``reserve`` (of both queues) per task of either kind.

Calls are counted in the worker processes (a middleware wraps the broker's methods
after the fork and writes its counts to a file every 0.2 s).

    python benchmarks/bench_rate.py --broker redis --seconds 30
    python benchmarks/bench_rate.py --broker sqlite --seconds 10 --json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import fresh_broker, start_gopherq_worker, stop_worker, wait_until

from gopherq import GopherQ, Middleware

LIMITED, FREE = "limited", "free"
COUNTED = ("reserve", "rate_admit", "defer", "ack", "requeue")
"""Broker methods whose calls the workers count."""
COUNTS_DIR = "GQBENCH_RATE_COUNTS"
"""Where each worker process writes its call counts (``counts-<pid>.json``)."""
RATE = "GQBENCH_RATE"
"""The limited task's rate (``--rate``), for the worker processes."""


class CountCalls(Middleware):
    """Counts the calls of ``COUNTED`` on this process's broker, written every 0.2 s."""

    def worker_process_init(self, app: GopherQ) -> None:
        folder = os.environ.get(COUNTS_DIR)
        if not folder:
            return
        counts: Counter[str] = Counter()
        broker = app.broker
        for name in COUNTED:
            setattr(broker, name, _counting(getattr(broker, name), name, counts))
        path = Path(folder) / f"counts-{os.getpid()}.json"

        def write() -> None:
            while True:
                time.sleep(0.2)
                path.write_text(json.dumps(counts))

        threading.Thread(target=write, daemon=True).start()


def _counting(method: Callable[..., Any], name: str, counts: Counter[str]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return method(*args, **kwargs)

    return call


def make_app() -> GopherQ:
    """The benchmark app; its broker comes from ``GOPHERQ_BROKER_URL``."""
    app = GopherQ("bench-rate", middleware=[CountCalls()])

    @app.task(name="rate.limited", queue=LIMITED, ignore_result=True,
              rate_limit=os.environ.get(RATE, "200/s"))  # fmt: skip
    def limited() -> None:
        """Do nothing, at most at the rate."""

    @app.task(name="rate.free", queue=FREE, ignore_result=True)
    def free() -> None:
        """Do nothing."""

    return app


app = make_app()  # what the workers load: ``-A bench_rate``


def send(bench: GopherQ, task: str, count: int) -> None:
    signature = bench.get_task(task).s
    for first in range(0, count, 1000):
        bench.send_many([signature() for _ in range(min(1000, count - first))])


def left(bench: GopherQ, queue: str) -> int:
    """Messages of ``queue`` not finished yet."""
    stats = bench.broker.stats().get(queue)
    return 0 if stats is None else stats.ready + stats.scheduled + stats.running


def total_calls(folder: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in folder.glob("counts-*.json"):
        try:
            counts.update(json.loads(path.read_text()))
        except ValueError:  # caught mid-write: the next read has it
            continue
    return counts


@contextmanager
def workers(count: int, concurrency: int) -> Iterator[list[Any]]:
    started = [
        start_gopherq_worker("bench_rate", concurrency, f"{LIMITED},{FREE}") for _ in range(count)
    ]
    try:
        yield started
    finally:
        for worker in started:
            stop_worker(worker)


def measure(
    kind: str, url: str | None, *, rate: float, seconds: float, free: int, limited: bool
) -> dict[str, Any]:
    """One run on a fresh broker: with ``limited``, the limited backlog is taken first
    (every message claims its slot and goes back to wait: the claim phase), then the
    free batch drains beside it while the limited task runs at its rate."""
    with (
        fresh_broker(kind, url, "gqbench-rate") as broker_url,
        tempfile.TemporaryDirectory(prefix="gqbench-rate-counts-") as counts_dir,
    ):
        os.environ["GOPHERQ_BROKER_URL"] = broker_url
        os.environ[COUNTS_DIR] = counts_dir
        folder = Path(counts_dir)
        bench = make_app()
        backlog = int(rate * (seconds + 5) * 1.1) if limited else 0
        send(bench, "rate.limited", backlog)
        send(bench, "rate.free", free)
        for queue in (LIMITED, FREE):
            bench.broker.pause(queue)
        figures: dict[str, Any] = {"free_tasks": free, "limited_backlog": backlog}
        with workers(2, 2) as started:
            time.sleep(2.0)  # the children reach their first (empty) reserve
            start = time.perf_counter()
            if limited:
                bench.broker.resume(LIMITED)
                claimed = wait_until(lambda: _unclaimed(bench) == 0, started[0])
                figures["claim_s"] = claimed - start
                calls = total_calls(folder)
                figures["claim_calls_per_task"] = {
                    name: calls[name] / backlog for name in ("reserve", "rate_admit", "defer")
                }
            t0, done0, calls0 = (
                time.perf_counter(),
                backlog - left(bench, LIMITED),
                total_calls(folder),
            )
            bench.broker.resume(FREE)
            drained = wait_until(lambda: not left(bench, FREE), started[0]) - t0
            figures["free_drain_s"], figures["free_per_s"] = drained, free / drained
            if limited:
                time.sleep(max(start + seconds - time.perf_counter(), 0.0))
                t1, done1 = time.perf_counter(), backlog - left(bench, LIMITED)
                delta = total_calls(folder) - calls0
                ran = done1 - done0
                figures["window_s"] = t1 - t0
                figures["limited_rate"] = ran / (t1 - t0)
                figures["accuracy"] = figures["limited_rate"] / rate
                figures["run_calls_per_task"] = {
                    "reserve": delta["reserve"] / (ran + free),
                    "rate_admit": delta["rate_admit"] / ran,
                    "defer": delta["defer"] / ran,
                }
            figures["calls"] = dict(total_calls(folder))
        bench.close()
        return figures


def _unclaimed(bench: GopherQ) -> int:
    """Limited messages still ready or leased: not yet put back to wait for their slot."""
    stats = bench.broker.stats().get(LIMITED)
    return 0 if stats is None else stats.ready + stats.running


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose free drain rate is the median of ``runs``."""
    ranked = sorted(runs, key=lambda figures: figures["free_per_s"])
    return ranked[len(ranked) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["sqlite", "redis"], default="redis")
    parser.add_argument("--url", default=None, help="a Redis to use (default: a private one)")
    parser.add_argument("--rate", type=float, default=200.0, help="the limit, per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--free", type=int, default=20_000, help="unlimited tasks to drain")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, taking turns")
    parser.add_argument("--json", action="store_true", help="print JSON")
    options = parser.parse_args()
    os.environ[RATE] = f"{options.rate:g}/s"
    run = functools.partial(
        measure, options.broker, options.url, rate=options.rate, seconds=options.seconds,
        free=options.free,
    )  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for _ in range(options.repeat):  # side by side, taking turns
        runs["without"].append(run(limited=False))
        runs["with"].append(run(limited=True))
    without = _median_run(runs["without"])
    with_limit = _median_run(runs["with"])
    figures = {
        "broker": options.broker,
        "rate": options.rate,
        "repeat": options.repeat,
        "with_limited": with_limit,
        "without_limited": without,
        "free_drain_ratio": with_limit["free_per_s"] / without["free_per_s"],
        "runs": runs,
    }
    if options.json:
        print(json.dumps(figures, indent=2))
        return 0
    claim, run = with_limit["claim_calls_per_task"], with_limit["run_calls_per_task"]
    print(
        f"{options.broker}: rate_limit={options.rate:g}/s, 2 workers -c 2, "
        f"median of {options.repeat} runs each (by free drain)\n"
        f"  claim phase     {with_limit['limited_backlog']:,} limited messages put back "
        f"to wait in {with_limit['claim_s']:.2f} s; per message: reserve "
        f"{claim['reserve']:.3f}, rate_admit {claim['rate_admit']:.3f}, "
        f"defer {claim['defer']:.3f}\n"
        f"  observed rate   {with_limit['limited_rate']:.1f}/s over "
        f"{with_limit['window_s']:.1f} s (accuracy {with_limit['accuracy']:.3f})\n"
        f"  free drain      {with_limit['free_per_s']:,.0f}/s beside the limited task, "
        f"{without['free_per_s']:,.0f}/s alone: ratio {figures['free_drain_ratio']:.2f}\n"
        f"  then per limited task run: rate_admit {run['rate_admit']:.2f}, "
        f"defer {run['defer']:.3f}; reserve per task of either kind {run['reserve']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
