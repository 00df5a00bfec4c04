"""Dashboard page times with a large job history.

::

    python benchmarks/bench_dashboard.py [--jobs N] [--requests N] [--json]

Fills a fresh SQLite broker (a file in a temporary directory) with ``--jobs`` job
records written straight to the result store (one in ten FAILED), one outcome
event per job spread over the last hour, and a few dead letters; then serves the
dashboard in this process (``create_app(..., auth=False)`` under Starlette's test
client, no socket) and times each page ``--requests`` times after one warm-up:
p50, p95 and the slowest, in milliseconds, HTML rendering included. A job's page is
timed twice: for the newest finished job, and for one still queued, whose
arguments come from the broker (``Broker.peek``).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from _common import fresh_broker, latency_summary, table, time_calls
from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.events import Event
from gopherq.results import ErrorInfo, JobRecord
from gopherq.states import State
from gopherq.web import create_app

BATCH = 2000


def fill(app: GopherQ, jobs: int, now: float) -> str:
    """``jobs`` records and their events over the last hour; the newest job's id."""
    id = ""
    for start in range(0, jobs, BATCH):
        records, events = [], []
        for i in range(start, min(jobs, start + BATCH)):
            failed = i % 10 == 0
            sent = now - 3600 + 3600 * i / jobs
            id = str(uuid.uuid4())
            error = ErrorInfo("ValueError", "boom") if failed else None
            state = State.FAILED if failed else State.SUCCEEDED
            records.append(
                JobRecord(id, "bench.add", state, created=sent, finished=sent, error=error)
            )
            kind = "task-failed" if failed else "task-succeeded"
            events.append(Event(kind, sent, id, "bench.add", "default"))
        app.backend.store(records)
        app.events.publish(events)
    app.events.flush()
    for n in range(20):
        app.send_task("bench.add", [n, n], queue="doomed")
        [delivery] = app.broker.reserve(["doomed"], 1, 0)
        app.broker.dead(delivery, "MAX_RETRIES", "boom")
    return id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    results: dict[str, Any] = {}
    with fresh_broker("sqlite", None, "bench-dashboard") as url:
        app = GopherQ("bench", broker=url)
        started = time.perf_counter()
        newest = fill(app, options.jobs, time.time())
        filled = time.perf_counter() - started
        queued = app.send_task("bench.add", [1, 2]).id  # its arguments read from the broker
        pages = {
            "/": "/",
            "/queues": "/queues",
            "/jobs": "/jobs",
            "/jobs?state=FAILED": "/jobs?state=FAILED",
            "/jobs?task=nope": "/jobs?task=nope",
            "/jobs?within=15m": "/jobs?within=15m",
            "/jobs/{id} (succeeded)": f"/jobs/{newest}",
            "/jobs/{id} (queued)": f"/jobs/{queued}",
            "/dead": "/dead",
            "/workers": "/workers",
            "/schedules": "/schedules",
        }
        with TestClient(create_app(app, auth=False)) as client:
            for name, page in pages.items():
                assert client.get(page).status_code == 200, page
                times = time_calls(lambda page=page: client.get(page), options.requests)
                results[name] = latency_summary(times) | {"max": max(times)}
        app.close()
    if options.json:
        print(json.dumps({"jobs": options.jobs, "fill_s": filled, "pages": results}, indent=2))
        return
    print(f"{options.jobs:,} jobs stored in {filled:.1f} s; {options.requests} requests a page\n")
    rows = [
        [page[:40], f"{r['p50']:.1f}", f"{r['p95']:.1f}", f"{r['max']:.1f}"]
        for page, r in results.items()
    ]
    print(table(["page", "p50 ms", "p95 ms", "max ms"], rows))


if __name__ == "__main__":
    main()
