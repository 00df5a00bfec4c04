"""End to end: events, progress, checkpoints, expiry and job history with
``gopherq worker`` processes, each test on SQLite and on a real Redis (whose
events go through a Redis stream)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
import services
from harness import Run, on_each_broker, run, stop, wait_for

from gopherq import State, TaskFailed
from gopherq.events import Event
from gopherq.events.redis import RedisEventBackend
from gopherq.events.sqlite import SQLiteEventBackend

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60), on_each_broker]
__all__ = ["run"]  # the fixture


def of_task(events: list[Event], id: str) -> list[tuple[str, int | None]]:
    return [(e.type, e.attempt) for e in events if e.id == id]


def collect(subscription: Iterator[Event], until: str, id: str) -> list[Event]:
    """Events from ``subscription`` up to the first of type ``until`` for task ``id``."""
    seen = []
    for event in subscription:
        seen.append(event)
        if event.type == until and event.id == id:
            return seen
    pytest.fail(f"no {until} for {id} among {[(e.type, e.id) for e in seen]}")


def test_subscribers_see_the_exact_sequence_of_a_task_that_retries(run: Run) -> None:
    events = run.producer.events
    first = events.subscribe(timeout=15)
    second = events.subscribe(types=["task-retried", "task-succeeded"], timeout=15)
    worker = run.worker("-c", "2", worker_heartbeat="0.2")
    result = run.send("twice")
    assert result.get(timeout=15) == 2, run.log()
    seen = collect(first, "task-succeeded", result.id)
    assert of_task(seen, result.id) == [
        ("task-enqueued", 0),
        ("task-started", 0),
        ("task-retried", 0),
        ("task-started", 1),
        ("task-retried", 1),
        ("task-started", 2),
        ("task-succeeded", 2),
    ]
    retried = [e for e in seen if e.type == "task-retried"]
    assert [(e.extra["error_type"], e.extra["error"]) for e in retried] == [
        ("ValueError", "attempt 0"),
        ("ValueError", "attempt 1"),
    ]
    assert all(e.extra["eta"] > e.time for e in retried)
    ran = [e for e in seen if e.id == result.id and e.type != "task-enqueued"]
    assert all(e.worker and e.task == "tasks.twice" and e.queue == "default" for e in ran)
    # The second subscriber, of two types only, saw the same events of those types.
    filtered = collect(second, "task-succeeded", result.id)
    assert filtered == [e for e in seen if e.type in ("task-retried", "task-succeeded")]
    # Events default to the broker's own store: a table in SQLite, a stream in Redis.
    if run.url.startswith("redis"):
        assert isinstance(events.backend, RedisEventBackend)
        client = redis.Redis.from_url(services.redis_url())
        try:
            assert client.xlen(events.backend.key) >= len(seen)
        finally:
            client.close()
    else:
        assert isinstance(events.backend, SQLiteEventBackend)

    # Worker events: online at once, heartbeats with counts, offline at a graceful stop.
    def beat() -> Event | None:
        last = events.last(1, "worker-heartbeat")
        return last[0] if last and last[0].extra["processed"] == 3 else None

    wait_for(beat, 5, run.log)  # the three runs, once settled
    (online,) = events.last(1, "worker-online")
    assert online.extra["concurrency"] == 2
    heartbeat = beat()
    assert heartbeat is not None
    assert heartbeat.worker == online.worker
    assert len(heartbeat.extra["processes"]) == 2
    assert heartbeat.extra["active"] == 0
    assert stop(worker) == 0, run.log()
    assert events.last(1)[0].type == "worker-offline"


def test_a_restarted_subscriber_resumes_from_its_cursor(run: Run) -> None:
    worker = run.worker("-c", "2")
    subscription = run.producer.events.subscribe(types="task-succeeded", since="0", timeout=10)
    results = [run.send("add", i, i) for i in range(5)]
    [r.get(timeout=10) for r in results]
    seen = [next(subscription) for _ in range(3)]
    cursor = subscription.cursor
    subscription.close()
    more = [run.send("add", i, i) for i in range(5, 8)]
    [r.get(timeout=10) for r in more]
    resumed = run.producer.events.subscribe(types="task-succeeded", since=cursor, timeout=5)
    rest = [next(resumed) for _ in range(5)]
    ids = [e.id for e in seen + rest]
    assert sorted(ids) == sorted(r.id for r in results + more)  # none missed, none twice
    assert int(rest[0].cursor) > int(cursor)
    assert stop(worker) == 0


def test_progress_and_checkpoints_survive_a_sigkill(run: Run) -> None:
    worker = run.worker("-c", "1", lease_seconds="60")
    result = run.send("steps", 12, 0.1)
    progress = run.producer.events.subscribe(types="task-progress", timeout=15)
    wait_for(lambda: len(run.events("step")) >= 4, 15, run.log)
    assert result.progress is not None
    assert result.progress.total == 12
    assert 0 < result.progress.done < 12
    assert result.state is State.STARTED
    first = next(progress)
    assert first.id == result.id
    assert first.extra["total"] == 12
    assert first.extra["message"] == "stepping"
    victim = run.events("step")[-1][1]
    os.kill(victim, signal.SIGKILL)
    starts = result.get(timeout=20)
    assert len(starts) == 2, run.log()
    assert starts[0] == 0
    assert starts[1] >= 4  # the second run resumed from the checkpoint
    steps = [e[3] for e in run.events("step")]
    assert steps == sorted(set(steps))  # no step done twice
    assert set(range(starts[1] + 1, 13)) <= set(steps)
    record = result.record()
    assert record.state is State.SUCCEEDED
    assert record.checkpoint is None  # dropped on success
    assert record.progress is not None and record.progress.done == 12
    lost = [
        e
        for e in run.producer.events.last(100, "task-retried")
        if e.extra.get("reason") == "WORKER_LOST"
    ]
    assert [e.id for e in lost] == [result.id]
    assert "SIGKILL" in lost[0].extra["error"]
    assert stop(worker) == 0


def test_job_history_newest_first(run: Run) -> None:
    worker = run.worker("-c", "2")
    ok = run.send("add", 1, 2)
    ok.get(timeout=10)  # so the next is sent later
    failed = run.send("fails")
    failed.get(timeout=10, propagate=False)
    jobs = run.producer.jobs()
    assert [j.id for j in jobs[:2]] == [failed.id, ok.id]
    assert [j.id for j in run.producer.jobs(state="failed")] == [failed.id]
    assert [j.id for j in run.producer.jobs(task="tasks.add")] == [ok.id]
    assert stop(worker) == 0


EXPIRES = 0.3


def test_a_task_no_worker_starts_in_time_ends_expired(run: Run) -> None:
    """``expires``: a task still queued at its expiry time never runs; it ends EXPIRED."""
    expired = run.producer.events.subscribe(types="task-expired", timeout=15)
    late = run.send("touch", "late.marker", expires=EXPIRES)  # no worker yet
    sent = time.time()
    on_time = run.send("touch", "on-time.marker", expires=60)
    assert late.state is State.QUEUED
    wait_for(lambda: time.time() > sent + EXPIRES, 5)  # its expiry passes while it waits
    worker = run.worker("-c", "1")
    assert on_time.get(timeout=15) == "on-time.marker", run.log()
    failure = late.get(timeout=15, propagate=False)
    assert isinstance(failure, TaskFailed), (failure, run.log())  # it ran: no expiry
    assert "expired" in failure.message
    record = late.record()
    assert record.state is State.EXPIRED
    assert record.result is None
    assert late.state is State.EXPIRED
    event = next(expired)
    assert (event.type, event.id, event.task) == ("task-expired", late.id, "tasks.touch")
    assert event.extra["reason"] == "EXPIRED"
    assert event.worker and event.attempt == 0
    # Never started, never ran: no event of a start, no marker; the other one ran.
    assert of_task(run.producer.events.last(100), late.id) == [
        ("task-enqueued", 0),
        ("task-expired", 0),
    ]
    assert not (run.path / "late.marker").exists()
    assert (run.path / "on-time.marker").exists()
    assert [e[3:] for e in run.events("touch")] == [["on-time.marker"]]
    assert [j.id for j in run.producer.jobs(state="expired")] == [late.id]
    assert stop(worker) == 0, run.log()
