"""What one scrape of ``gopherq exporter`` costs on a big broker.

::

    python benchmarks/bench_exporter.py [--broker sqlite|redis|both] [--queues N]
        [--tasks N] [--scrapes N] [--url redis://...] [--json]

Fills a fresh broker (a SQLite file in a temporary directory; a private
``redis-server``, see ``_common.redis_url``) with ``--tasks`` ready messages spread
over ``--queues`` queues and the five named priorities, plus a few scheduled,
leased and dead ones per queue, then times ``--scrapes`` scrapes one after
another:

query      ``Broker.queue_depths()``: what the broker takes
scrape     the whole ``/metrics`` body as the exporter serves it
           (``BrokerCollector.exposition()``, no cache): query and text

Each figure is p50, p95 and the slowest of the scrapes, in wall-clock time, and the
median CPU time this process spent (``time.process_time``), plus on Redis the
server's CPU time per scrape (``INFO cpu``): on a busy shared machine wall-clock
time swings with the load, while the CPU time a scrape costs does not. The fill goes through
``Broker.enqueue`` in batches of ``FILL_BATCH`` (one transaction, or one round
trip, each) and takes a minute or two for a million messages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import fresh_broker, latency_summary

from gopherq import GopherQ
from gopherq.brokers import Broker, Envelope
from gopherq.observability.exporter import BrokerCollector

FILL_BATCH = 10_000
BODY = b"\x8a" + b"x" * 120  # about the size of a small task's message
PREFIX = "gqbench-exporter"
SCHEDULED, LEASED, DEAD = 5, 2, 1  # per queue, beside the ready messages


def fill(broker: Broker, queues: int, tasks: int) -> float:
    """Enqueue ``tasks`` ready messages round-robin over ``queues`` queues and the five
    priorities, then per queue a few scheduled, leased and dead; returns the seconds."""
    start = time.perf_counter()
    names = [f"queue-{n:04d}" for n in range(queues)]
    batch: list[Envelope] = []
    for i in range(tasks):
        batch.append(Envelope(f"t{i}", names[i % queues], (i // queues) % 5, BODY))
        if len(batch) == FILL_BATCH:
            broker.enqueue(batch)
            batch.clear()
            done = i + 1
            if done % 100_000 == 0:
                print(f"  {done:,} of {tasks:,}", file=sys.stderr)
    later = time.time() + 86400
    for name in names:
        batch += [Envelope(f"{name}-s{j}", name, 2, BODY, later) for j in range(SCHEDULED)]
    broker.enqueue(batch)
    for name in names:
        # The oldest ready messages of each queue get leased; one of them dies.
        leased = broker.reserve([name], LEASED, 0)
        for delivery in leased[:DEAD]:
            broker.dead(delivery, "REJECTED", "benchmark")
    return time.perf_counter() - start


def time_scrapes(
    app: GopherQ, scrapes: int, server_cpu: Callable[[], float] | None
) -> dict[str, Any]:
    """Time ``scrapes`` broker queries and ``scrapes`` whole scrapes, in ms."""
    collector = BrokerCollector(app, cache_seconds=0)
    try:
        collector.exposition()  # warm: scripts loaded, connections open, pages cached
        queries, bodies, cpu = [], [], []
        server = server_cpu() if server_cpu else 0.0
        for _ in range(scrapes):
            start = time.perf_counter()
            depths = app.broker.queue_depths()
            queries.append((time.perf_counter() - start) * 1000)
            start, start_cpu = time.perf_counter(), time.process_time()
            body = collector.exposition()
            bodies.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    finally:
        collector.close()
    ready = sum(sum(d.ready.values()) for d in depths.values())
    figures: dict[str, Any] = {"scrape_cpu_ms": statistics.median(cpu)}
    if server_cpu:
        figures["server_cpu_ms"] = (server_cpu() - server) / (2 * scrapes) * 1000
    return figures | {
        "queues": len(depths),
        "ready": ready,
        "samples": body.count(b"\ngopherq_"),
        "body_bytes": len(body),
        "query_ms": latency_summary(queries) | {"max": max(queries)},
        "scrape_ms": latency_summary(bodies) | {"max": max(bodies)},
    }


def redis_cpu(url: str) -> Callable[[], float]:
    """A function giving the CPU seconds the Redis at ``url`` has used so far."""
    import redis

    client = redis.Redis.from_url(url.partition("?")[0])

    def used() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return used


def run(kind: str, queues: int, tasks: int, scrapes: int, url: str | None) -> dict[str, Any]:
    with fresh_broker(kind, url, PREFIX) as found:
        app = GopherQ("bench", broker=found, events=None)
        try:
            print(f"{kind}: filling {tasks:,} messages over {queues:,} queues", file=sys.stderr)
            filled = fill(app.broker, queues, tasks)
            server_cpu = redis_cpu(found) if kind == "redis" else None
            result = {"broker": kind, "fill_seconds": filled}
            result |= time_scrapes(app, scrapes, server_cpu)
            return result
        finally:
            app.close()


def show(result: dict[str, Any]) -> None:
    query, scrape = result["query_ms"], result["scrape_ms"]
    print(
        f"{result['broker']:6}  {result['queues']:,} queues, {result['ready']:,} ready, "
        f"{result['samples']:,} samples ({result['body_bytes'] / 1024:.0f} KiB), "
        f"filled in {result['fill_seconds']:.0f} s\n"
        f"        query   p50 {query['p50']:6.1f} ms  p95 {query['p95']:6.1f} ms  "
        f"max {query['max']:6.1f} ms\n"
        f"        scrape  p50 {scrape['p50']:6.1f} ms  p95 {scrape['p95']:6.1f} ms  "
        f"max {scrape['max']:6.1f} ms\n"
        f"        scrape CPU {result['scrape_cpu_ms']:.1f} ms here"
        + (f", {result['server_cpu_ms']:.1f} ms in Redis" if "server_cpu_ms" in result else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--broker", choices=("sqlite", "redis", "both"), default="both")
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--url", default=None, help="a Redis to use instead of a private one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = ("sqlite", "redis") if args.broker == "both" else (args.broker,)
    results = [run(kind, args.queues, args.tasks, args.scrapes, args.url) for kind in kinds]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        show(result)


if __name__ == "__main__":
    main()
