"""What fair keys cost a send, in one process, without a worker's noise.

::

    python benchmarks/bench_fair.py [--messages N] [--repeat N] [--url URL] [--json]

On a fresh SQLite file and on Redis (a private ``redis-server``, or ``--url``),
rounds alternate between a no-op task without fair keys and the same task with
``fair_key="tenant"`` (its argument, one of ``TENANTS`` in turn), ``--repeat``
each, each first in turn. A round sends ``--messages`` messages one by one with
``.delay()``, then ``--messages`` more with one ``send_many`` (one broker call
on SQLite, one pipeline of 1,000-message scripts on Redis), then purges the
queue. Events are off: the figure is the broker's. Printed: the best round's
wall time per message of each step, without and with keys, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from _common import fresh_broker, table

from gopherq import GopherQ
from gopherq.task import Task

TENANTS = 100
QUEUE = "bench-fair"


def open_app(url: str) -> tuple[GopherQ, Task[[str], None], Task[[str], None]]:
    """An app on ``url`` and its two no-op tasks: without and with a fair key."""
    app = GopherQ("bench", broker=url, events=False)

    @app.task(name="bench.plain", queue=QUEUE, ignore_result=True)
    def plain(tenant: str) -> None:
        """Do nothing."""

    @app.task(name="bench.fair", queue=QUEUE, ignore_result=True, fair_key="tenant")
    def fair(tenant: str) -> None:
        """Do nothing, in turns by tenant."""

    return app, plain, fair


def one_round(app: GopherQ, task: Task[[str], None], messages: int) -> dict[str, float]:
    """Microseconds per message of each step."""
    tenants = [f"tenant-{n % TENANTS}" for n in range(messages)]
    start = time.perf_counter()
    for tenant in tenants:
        task.delay(tenant)
    single = time.perf_counter() - start
    start = time.perf_counter()
    app.send_many(task.s(tenant) for tenant in tenants)
    bulk = time.perf_counter() - start
    app.broker.purge(QUEUE)
    return {"single": single / messages * 1e6, "bulk": bulk / messages * 1e6}


def measure(url: str, messages: int, repeat: int) -> dict[str, dict[str, float]]:
    """The best round of each step, without and with fair keys."""
    app, plain, fair = open_app(url)
    app.broker.ping()
    one_round(app, plain, min(messages, 500))  # warm up: scripts loaded, file made
    best: dict[str, dict[str, float]] = {"without": {}, "with": {}}
    for n in range(repeat):
        order = [("without", plain), ("with", fair)]
        for label, task in order if n % 2 == 0 else reversed(order):
            for step, micros in one_round(app, task, messages).items():
                best[label][step] = min(best[label].get(step, micros), micros)
    app.close()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages per step")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each")
    parser.add_argument("--url", help="Redis to use (default: a private redis-server)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    options = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for kind in ("sqlite", "redis"):
        with fresh_broker(kind, options.url, "gqbench-fair") as url:
            results[kind] = measure(url, options.messages, options.repeat)
    if options.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    rows = [
        [
            kind,
            step,
            f"{found['without'][step]:.1f}",
            f"{found['with'][step]:.1f}",
            f"{found['with'][step] / found['without'][step]:.2f}",
        ]
        for kind, found in results.items()
        for step in ("single", "bulk")
    ]
    print(f"send of {options.messages:,} messages, best of {options.repeat}, us per message")
    print(table(["broker", "send", "without keys", "with keys", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
