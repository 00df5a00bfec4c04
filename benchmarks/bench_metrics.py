"""Cost per task of the worker's Prometheus metrics, in one process, without noise from
brokers or other processes.

::

    python benchmarks/bench_metrics.py [--runs N] [--repeat N] [--json]

Runs ``--runs`` no-op tasks (results ignored, events off) through the worker's
``Runner``, as a worker process does between reserve and settle, with no
middleware and then with the metrics middleware counting into a shared-memory
block; the best of ``--repeat`` rounds of each, in microseconds per task, and
the ratio of the rates. A drain adds the broker's work to every task, so its
ratio is closer to 1 than this one. ``scrape`` times one exposition of the
counts (``generate_latest``) for the same app.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from prometheus_client.exposition import generate_latest

from gopherq import GopherQ
from gopherq.brokers import Delivery
from gopherq.message import Message, new_id
from gopherq.observability.metrics import WorkerMetrics, WorkerView
from gopherq.runner import Runner


def make_app() -> GopherQ:
    app = GopherQ("bench", broker="memory://", events="off")

    @app.task(name="bench.noop", ignore_result=True)
    def noop() -> None:
        """Do nothing."""

    return app


def one_round(runner: Runner, deliveries: list[Delivery]) -> float:
    """Microseconds per task of one round."""
    start = time.perf_counter()
    for delivery in deliveries:
        runner.run(delivery)
    return (time.perf_counter() - start) / len(deliveries) * 1e6


def measure(runs: int, repeat: int) -> dict[str, Any]:
    """The best round of each, rounds alternated (off, on, off, on, ...)."""
    app = make_app()
    deliveries = []
    for _ in range(runs):
        message = Message(new_id(), "bench.noop")
        body = app.codec.encode(message)
        deliveries.append(Delivery(message.id, "default", 2, body, 0, 1, "token"))
    runner = Runner(app, worker="bench")
    metrics = WorkerMetrics(app, ["default"], concurrency=1)
    metrics.middleware.attach(0)
    one_round(runner, deliveries)  # warm-up
    rounds: dict[str, list[float]] = {"metrics_off": [], "metrics_on": []}
    for _ in range(repeat):
        rounds["metrics_off"].append(one_round(runner, deliveries))
        app.middleware.add(metrics.middleware)
        rounds["metrics_on"].append(one_round(runner, deliveries))
        app.middleware.remove(metrics.middleware)
    off, on = min(rounds["metrics_off"]), min(rounds["metrics_on"])
    registry = metrics.registry(lambda: WorkerView(children=1))
    start = time.perf_counter()
    generate_latest(registry)
    scrape = time.perf_counter() - start
    return {
        "runs": runs,
        "us_per_task": {"metrics_off": off, "metrics_on": on},
        "added_us_per_task": on - off,
        "ratio": off / on,
        "scrape_ms": scrape * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000, help="tasks per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of each")
    parser.add_argument("--json", action="store_true", help="print JSON")
    options = parser.parse_args()
    figures = measure(options.runs, options.repeat)
    if options.json:
        print(json.dumps(figures, indent=2))
        return 0
    cost = figures["us_per_task"]
    print(
        f"runner, no-op task: {cost['metrics_off']:.1f} us/task without metrics, "
        f"{cost['metrics_on']:.1f} with (+{figures['added_us_per_task']:.2f} us), "
        f"rate ratio {figures['ratio']:.3f}; one scrape {figures['scrape_ms']:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
