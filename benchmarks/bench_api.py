"""The HTTP API under load: latency of every read endpoint and the rate of ``POST /jobs``.

::

    python benchmarks/bench_api.py [--broker sqlite|redis|both] [--requests N]
        [--posts N] [--concurrency N] [--jobs N] [--events N] [--url redis://...]
        [--only WORDS] [--floor [--repeat N]] [--direct N] [--json]

Fills a fresh broker (a SQLite file in a temporary directory; a private
``redis-server``, or ``--url``'s Redis under a key prefix of the run's own,
deleted at the end) with ``--jobs`` job records written straight to the result
store, ``--events`` events, a few hundred dead letters, queues holding messages
and a few dynamic schedules. Then starts ``gopherq serve -A _api_app --port 0
--no-auth`` and drives it from this process (``_load``: ``--concurrency``
keep-alive connections on loopback, ``--requests`` requests per endpoint after a
short warm-up): p50, p95, p99 and the slowest, requests per second, and the CPU
the server and this client spent per request. An endpoint that answers 404 or
405 is not served by this version and is left out with a note.

``--floor`` measures instead what the stack under the API reaches on this
machine: a minimal FastAPI app of the benchmark's own (``_api_app.make_floor``:
no auth, no audit, one send per request) under uvicorn, with the asyncio loop and
h11 and with uvloop and httptools, a ``def`` route, an ``async def`` route
calling the blocking send, and an ``async def`` route awaiting
``gopherq.web.sender.Sender``.

``--direct N`` fills the broker and times instead, in this process, each
admin-layer call under a read endpoint ``N`` times: what a read costs before HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import _load
import msgpack
import psutil  # type: ignore[import-untyped]
from _api_app import BROKER_VARIABLE
from _common import HERE, fresh_broker, latency_summary, table

from gopherq import GopherQ, admin, admin_dead, admin_queues, admin_workers
from gopherq.brokers import Envelope
from gopherq.events import Event
from gopherq.message import Message, new_id
from gopherq.results import ErrorInfo, JobRecord
from gopherq.states import State

PREFIX = "gqbench-api"
STORE_BATCH = 5_000
TASKS = ("bench.report", "bench.resize", "bench.email", "bench.noop")
STATES = (State.SUCCEEDED,) * 6 + (State.FAILED, State.STARTED, State.PENDING, State.CANCELLED)
QUEUES = ("default", "images", "mail", "reports")
DEAD_LETTERS = 300
QUEUED = 2_000  # ready messages per queue
SCHEDULES = 5
EVENT_RATE = 100  # events a second in the seeded history
WORKERS = ("bench-1@host", "bench-2@host")
WARM_UP = 100
API = "/api/v1"


@dataclass(frozen=True)
class Endpoint:
    """One row of the benchmark: a request template. ``{job}``, ``{dead}``, ``{queue}``
    and ``{schedule}`` in the path take seeded values, a different one per request."""

    name: str
    path: str
    method: str = "GET"


READS = (
    Endpoint("GET /live", "/live"),
    Endpoint("GET /health", f"{API}/health"),
    Endpoint("GET /jobs", f"{API}/jobs"),
    Endpoint("GET /jobs?state=FAILED", f"{API}/jobs?state=FAILED"),
    Endpoint("GET /jobs?task=&queue=", f"{API}/jobs?task=bench.email&queue=mail"),
    Endpoint("GET /jobs/{id}", f"{API}/jobs/{{job}}"),
    Endpoint("GET /dead", f"{API}/dead"),
    Endpoint("GET /dead?reason=", f"{API}/dead?reason=MAX_RETRIES"),
    Endpoint("GET /dead/{id}", f"{API}/dead/{{dead}}"),
    Endpoint("GET /queues", f"{API}/queues"),
    Endpoint("GET /queues/{name}", f"{API}/queues/{{queue}}"),
    Endpoint("GET /schedules", f"{API}/schedules"),
    Endpoint("GET /workers", f"{API}/workers"),
    Endpoint("GET /tasks", f"{API}/tasks"),
    Endpoint("GET /events?follow=false", f"{API}/events?follow=false"),
    Endpoint("GET /audit", f"{API}/audit"),
    Endpoint("GET /metrics", "/metrics"),
)
"""The read endpoints measured, in order."""

POST_JOBS = Endpoint("POST /jobs", f"{API}/jobs", "POST")


@dataclass
class Seeded:
    """What the fill wrote, for the request templates."""

    jobs: list[str]
    dead: list[str]
    queues: list[str]
    schedules: list[str]
    seconds: float


# Filling the broker.


def seed(app: GopherQ, jobs: int, events: int) -> Seeded:
    """Write ``jobs`` records, ``events`` events, dead letters, queued messages and
    schedules; returns what was written."""
    start = time.perf_counter()
    now = time.time()
    ids = [new_id() for _ in range(jobs)]
    result = msgpack.packb({"ok": True, "rows": 42})
    error = ErrorInfo("ValueError", "bad input", "Traceback (most recent call last):\n  ...\n")
    for first in range(0, jobs, STORE_BATCH):
        records = []
        for n in range(first, min(first + STORE_BATCH, jobs)):
            state = STATES[n % len(STATES)]
            created = now - (jobs - n)  # one a second, the last one now
            done = state in (State.SUCCEEDED, State.FAILED, State.CANCELLED)
            records.append(
                JobRecord(
                    id=ids[n],
                    task=TASKS[n % len(TASKS)],
                    state=state,
                    queue=QUEUES[n % len(QUEUES)],
                    result=result if state is State.SUCCEEDED else None,
                    error=error if state is State.FAILED else None,
                    attempts=1,
                    created=created,
                    started=created + 0.01 if state is not State.PENDING else None,
                    finished=created + 0.02 if done else None,
                    worker="bench@host" if state is not State.PENDING else None,
                )
            )
        app.backend.store(records)
    publish_events(app, ids, events, now)
    dead = fill_queues(app)
    schedules = [f"bench-schedule-{n}" for n in range(SCHEDULES)]
    for name in schedules:
        app.schedules.add(name, "bench.noop", every=timedelta(minutes=5), replace=True)
    held = [f"{queue}-held" for queue in QUEUES]
    return Seeded(ids, dead, held, schedules, time.perf_counter() - start)


def publish_events(app: GopherQ, ids: list[str], count: int, now: float) -> None:
    """``count`` events ending now, ``EVENT_RATE`` a second: each of the newest jobs
    enqueued, started and succeeded, and a heartbeat of each of ``WORKERS`` every
    ``worker_heartbeat`` seconds."""
    start = now - count / EVENT_RATE
    beat = app.settings.worker_heartbeat
    kinds = ("task-enqueued", "task-started", "task-succeeded")
    events, next_beat = [], start
    for n in range(count):
        at = start + n / EVENT_RATE
        if at >= next_beat:
            events += [Event("worker-heartbeat", at, worker=name) for name in WORKERS]
            next_beat += beat
            continue
        job = ids[-1 - (n // 3) % len(ids)]
        task, queue = TASKS[n // 3 % len(TASKS)], QUEUES[n // 3 % len(QUEUES)]
        events.append(Event(kinds[n % 3], at, job, task, queue, WORKERS[n % 2], 0))
    for first in range(0, len(events), STORE_BATCH):
        app.events.publish(events[first : first + STORE_BATCH])


def fill_queues(app: GopherQ) -> list[str]:
    """``QUEUED`` ready messages per queue, then ``DEAD_LETTERS`` dead ones; their ids."""
    body = app.codec.encode(Message(id=new_id(), task="bench.noop"))
    for queue in QUEUES:
        app.broker.enqueue([Envelope(new_id(), f"{queue}-held", 2, body) for _ in range(QUEUED)])
    dead: list[str] = []
    for queue in QUEUES:
        share = DEAD_LETTERS // len(QUEUES)
        app.broker.enqueue([Envelope(new_id(), f"{queue}-dead", 2, body) for _ in range(share)])
        for delivery in app.broker.reserve([f"{queue}-dead"], share, 0):
            app.broker.dead(delivery, "MAX_RETRIES", "ValueError: bad input")
            dead.append(delivery.id)
    return dead


# The server.


@contextmanager
def server(argv: Sequence[str], broker: str) -> Iterator[tuple[int, psutil.Process]]:
    """Start ``argv`` in this directory with the broker in the environment; yield the
    port it printed and its process. Its log goes to a file, read for the port."""
    env = {**os.environ, BROKER_VARIABLE: broker}
    with tempfile.NamedTemporaryFile(prefix="gqbench-api-", suffix=".log") as log:
        process = subprocess.Popen(argv, cwd=HERE, env=env, stdout=log, stderr=log)
        try:
            port = _port(process, Path(log.name))
            yield port, psutil.Process(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    raise SystemExit(f"the server printed no URL:\n{log.read_text(errors='replace')}")


def serve_argv(extra: Sequence[str]) -> list[str]:
    """``gopherq serve`` for the benchmark's app."""
    argv = [sys.executable, "-m", "gopherq", "serve", "-A", "_api_app"]
    return [*argv, "--host", "127.0.0.1", "--port", "0", "--no-auth", *extra]


def floor_argv(loop: str, http: str, access_log: bool) -> list[str]:
    """uvicorn serving ``_api_app.make_floor``."""
    argv = [sys.executable, "-m", "uvicorn", "_api_app:make_floor", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", "0", "--loop", loop, "--http", http]
    return argv + ([] if access_log else ["--no-access-log"])


# Measuring.


def measure(
    port: int,
    process: psutil.Process,
    endpoint: Endpoint,
    seeded: Seeded,
    *,
    count: int,
    concurrency: int,
    broker_cpu: Callable[[], float] = lambda: 0.0,
) -> dict[str, Any]:
    """Warm up, then ``count`` requests of ``endpoint``; its figures, or a note why not."""
    make = _maker(endpoint, seeded)
    probe = _load.run(port, make, 1, 1)
    status = next(iter(probe.statuses))
    if status in (404, 405):
        return {"endpoint": endpoint.name, "skipped": f"answers {status}: not served"}
    if probe.errors:
        return {"endpoint": endpoint.name, "skipped": f"answers {status}: {probe.last_body!r}"}
    _load.run(port, make, WARM_UP, min(concurrency, WARM_UP))
    server_before, broker_before = tree_cpu(process), broker_cpu()
    load = _load.run(port, make, count, concurrency)
    server_cpu, broker_used = tree_cpu(process) - server_before, broker_cpu() - broker_before
    done = len(load.latencies_ms)
    return {
        "endpoint": endpoint.name,
        "requests": done,
        "rate": load.rate,
        "ms": latency_summary(load.latencies_ms) | {"max": max(load.latencies_ms)},
        "errors": load.errors,
        "statuses": load.statuses,
        "bytes": len(load.last_body),
        "server_cpu_us": server_cpu / done * 1e6,
        "client_cpu_us": load.client_cpu / done * 1e6,
        "broker_cpu_us": broker_used / done * 1e6,
    }


def tree_cpu(process: psutil.Process) -> float:
    """CPU seconds used so far by ``process`` and the processes it started (the server
    processes of ``--workers``)."""
    total = 0.0
    for each in (process, *process.children(recursive=True)):
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def redis_cpu(url: str) -> Callable[[], float]:
    """What reads the CPU seconds the Redis server at ``url`` used so far (all of its
    clients': a private server's are the benchmark's alone)."""
    import redis

    client = redis.Redis.from_url(url.partition("?")[0])

    def used() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return used


def _maker(endpoint: Endpoint, seeded: Seeded) -> _load.MakeRequest:
    if endpoint.method == "POST":

        def post(i: int) -> bytes:
            body = b'{"task":"bench.noop","args":[%d],"kwargs":{}}' % i
            return _load.request("POST", endpoint.path, body)

        return post
    fields = {"job": seeded.jobs, "dead": seeded.dead or ["none"]}
    fields |= {"queue": seeded.queues, "schedule": seeded.schedules}
    if "{" not in endpoint.path:
        data = _load.request("GET", endpoint.path)
        return lambda i: data
    paths = [
        endpoint.path.format(**{k: v[n % len(v)] for k, v in fields.items()}) for n in range(997)
    ]
    requests = [_load.request("GET", path) for path in paths]
    return lambda i: requests[i % len(requests)]


def direct_calls(app: GopherQ, seeded: Seeded) -> dict[str, Callable[[int], object]]:
    """The admin-layer calls under the read endpoints, to time in this process."""
    jobs, dead, queues = seeded.jobs, seeded.dead, seeded.queues

    def job(i: int) -> object:
        id = jobs[i * 7919 % len(jobs)]
        found = admin.find_job(app, id)
        info = found or {}
        return found, admin.job_events(app, id, info.get("created"), info.get("finished"))

    return {
        "app.jobs()": lambda i: app.jobs(),
        "app.jobs(state=failed)": lambda i: app.jobs(state="failed"),
        "app.jobs(task=, queue=)": lambda i: app.jobs(task="bench.email", queue="mail"),
        "backend.get(id)": lambda i: app.backend.get(jobs[i * 7919 % len(jobs)]),
        "find_job + job_events": job,
        "admin_dead.dead_letters()": lambda i: admin_dead.dead_letters(app),
        "admin_dead.dead_letters(reason=)": lambda i: admin_dead.dead_letters(
            app, None, "MAX_RETRIES"
        ),
        "admin_dead.detail(id)": lambda i: admin_dead.detail(app, dead[i % len(dead)]),
        "admin_queues.queue_infos": lambda i: admin_queues.queue_infos(app),
        "admin_queues.queue_info(name)": lambda i: admin_queues.queue_info(
            app, queues[i % len(queues)]
        ),
        "schedules.list()": lambda i: app.schedules.list(),
        "admin.registered_tasks": lambda i: admin.registered_tasks(app),
        "events.last(100)": lambda i: app.events.last(100),
        "access.audit()": lambda i: app.access.audit(),
        "admin.check_health": lambda i: admin.check_health(app),
        "admin.recent_heartbeats": lambda i: admin.recent_heartbeats(app),
        "admin_workers.workers": lambda i: admin_workers.workers(app),
    }


def time_direct(app: GopherQ, seeded: Seeded, count: int) -> list[dict[str, Any]]:
    """Each of ``direct_calls`` ``count`` times in a row, after one to warm up."""
    rows = []
    for name, call in direct_calls(app, seeded).items():
        try:
            call(0)
        except Exception as exc:
            rows.append({"endpoint": name, "skipped": f"{type(exc).__name__}: {exc}"})
            continue
        latencies = []
        cpu = time.process_time()
        for i in range(count):
            start = time.perf_counter()
            call(i)
            latencies.append((time.perf_counter() - start) * 1000)
        used = (time.process_time() - cpu) / count
        rows.append(
            {
                "endpoint": name,
                "requests": count,
                "rate": count / (sum(latencies) / 1000),
                "ms": latency_summary(latencies) | {"max": max(latencies)},
                "errors": 0,
                "server_cpu_us": used * 1e6,
                "client_cpu_us": 0.0,
            }
        )
    return rows


def run_api(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fill a broker of ``kind``, serve it, measure every endpoint."""
    with fresh_broker(kind, args.url, PREFIX) as found:
        app = GopherQ(PREFIX, broker=found)
        try:
            print(
                f"{kind}: filling {args.jobs:,} job records, {args.events:,} events",
                file=sys.stderr,
            )
            seeded = seed(app, args.jobs, args.events)
            if args.direct:
                rows = time_direct(app, seeded, args.direct)
                return {"broker": kind, "fill_seconds": seeded.seconds, "endpoints": rows}
        finally:
            app.close()
        rows = []
        broker_cpu = redis_cpu(found) if kind == "redis" else lambda: 0.0
        with server(serve_argv(args.server_args.split()), found) as (port, process):
            for endpoint in _chosen((*READS, POST_JOBS), args.only):
                count = args.posts if endpoint is POST_JOBS else args.requests
                print(f"{kind}: {endpoint.name}", file=sys.stderr)
                rows.append(
                    measure(
                        port,
                        process,
                        endpoint,
                        seeded,
                        count=count,
                        concurrency=args.concurrency,
                        broker_cpu=broker_cpu,
                    )
                )
        return {"broker": kind, "fill_seconds": seeded.seconds, "endpoints": rows}


def _chosen(endpoints: Sequence[Endpoint], only: str) -> list[Endpoint]:
    """The endpoints whose name holds one of the comma-separated words of ``only``
    (all of them when it is empty)."""
    words = [word for word in only.split(",") if word]
    return [e for e in endpoints if not words or any(w in e.name for w in words)]


FLOOR = (
    # (endpoint, uvicorn loop, uvicorn http, access log)
    (Endpoint("GET /live", "/live"), "asyncio", "h11", False),
    (Endpoint("GET /live", "/live"), "uvloop", "httptools", False),
    (Endpoint("GET /live", "/live"), "uvloop", "httptools", True),
    (Endpoint("GET /live async", "/live-async"), "uvloop", "httptools", False),
    (Endpoint("POST def", "/sync", "POST"), "asyncio", "h11", False),
    (Endpoint("POST def", "/sync", "POST"), "uvloop", "httptools", False),
    (Endpoint("POST async inline", "/inline", "POST"), "uvloop", "httptools", False),
    (Endpoint("POST async Sender", "/batched", "POST"), "asyncio", "h11", False),
    (Endpoint("POST async Sender", "/batched", "POST"), "uvloop", "httptools", False),
    (Endpoint("POST Sender, gopherq deps", "/batched-deps", "POST"), "uvloop", "httptools", False),
    (
        Endpoint("POST Sender, async deps", "/batched-async-deps", "POST"),
        "uvloop",
        "httptools",
        False,
    ),
)


def run_floor(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """The stack under the API: see the module docstring. Each variant ``--repeat``
    times, taking turns; each figure is the median of its runs."""
    chosen = _chosen([row[0] for row in FLOOR], args.only)
    variants = [row for row in FLOOR if row[0] in chosen]
    runs: dict[str, list[dict[str, Any]]] = {}
    with fresh_broker(kind, args.url, PREFIX) as found:
        seeded = Seeded([], [], [], [], 0.0)
        for turn in range(args.repeat):
            for endpoint, loop, http, access_log in variants:
                count = args.posts if endpoint.method == "POST" else args.requests
                label = f"{endpoint.name} [{loop}+{http}" + (", access log]" if access_log else "]")
                print(f"{kind}: floor {label}, run {turn + 1}", file=sys.stderr)
                with server(floor_argv(loop, http, access_log), found) as (port, process):
                    row = measure(
                        port, process, endpoint, seeded, count=count, concurrency=args.concurrency
                    )
                runs.setdefault(label, []).append(row | {"endpoint": label})
    return {"broker": kind, "fill_seconds": 0.0, "endpoints": [_median(r) for r in runs.values()]}


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the medians of ``rows``' figures."""
    if any("skipped" in row for row in rows):
        return rows[0]
    out = rows[0] | {"runs": len(rows)}
    for name in ("rate", "server_cpu_us", "client_cpu_us", "errors"):
        out[name] = statistics.median(row[name] for row in rows)
    out["ms"] = {p: statistics.median(row["ms"][p] for row in rows) for p in rows[0]["ms"]}
    return out


def show(result: dict[str, Any], concurrency: int) -> None:
    header = ["endpoint", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "srv us", "cli us"]
    header.append("redis us")
    rows, notes = [], []
    for row in result["endpoints"]:
        if "skipped" in row:
            notes.append(f"  {row['endpoint']}: {row['skipped']}")
            continue
        ms = row["ms"]
        errors = f"  ({row['errors']} errors: {row['statuses']})" if row["errors"] else ""
        rows.append(
            [
                row["endpoint"] + errors,
                f"{row['rate']:,.0f}",
                *(f"{ms[p]:.1f}" for p in ("p50", "p95", "p99", "max")),
                f"{row['server_cpu_us']:.0f}",
                f"{row['client_cpu_us']:.0f}",
                f"{row.get('broker_cpu_us', 0.0):.0f}",
            ]
        )
    print(
        f"{result['broker']}: {concurrency} connections, client loop {_load.loop_name()}, "
        f"{psutil.cpu_count()} CPUs"
        + (f", filled in {result['fill_seconds']:.0f} s" if result["fill_seconds"] else "")
    )
    print(table(header, rows))
    if notes:
        print("not measured:\n" + "\n".join(notes))
    print(
        "srv us / cli us / redis us: CPU time per request of the server processes / of this "
        "client / of redis-server"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--broker", choices=("sqlite", "redis", "both"), default="both")
    parser.add_argument("--requests", type=int, default=2_000, help="per read endpoint")
    parser.add_argument("--posts", type=int, default=20_000, help="POST /jobs requests")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=100_000, help="job records to seed")
    parser.add_argument("--events", type=int, default=10_000, help="events to seed")
    parser.add_argument("--url", default=None, help="a Redis to use instead of a private one")
    parser.add_argument("--server-args", default="", help="more options for gopherq serve")
    parser.add_argument("--floor", action="store_true", help="measure the stack, not the API")
    parser.add_argument(
        "--direct", type=int, default=0, metavar="N", help="time the calls under the reads N times"
    )
    parser.add_argument("--repeat", type=int, default=1, help="floor runs per variant")
    parser.add_argument(
        "--only",
        default="",
        help="endpoints (and floor rows) whose name has one of these words, comma-separated",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = ("sqlite", "redis") if args.broker == "both" else (args.broker,)
    runner = run_floor if args.floor else run_api
    results = [runner(kind, args) for kind in kinds]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        show(result, args.concurrency)


if __name__ == "__main__":
    main()
