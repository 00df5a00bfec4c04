"""End to end on Redis: ``python -m gopherq worker`` processes against a real Redis.

Most tests use the suite's shared Redis (``tests/services.py``) under a key prefix
of their own, deleted afterwards (the harness's ``redis_run``); the outage test
starts and stops a ``redis-server`` of its own on a free loopback port. Events,
progress, expiry and job history run on Redis as well as SQLite in
``test_events_e2e.py``.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import services
from harness import Run, redis_run, stop, wait_for

from gopherq import BrokerUnavailable, GopherQ, ResultTimeout, State

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
__all__ = ["redis_run"]  # the fixture


def group_alive(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of process group ``pgid``."""
    alive = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != "zombie":
                alive.append(process)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def test_results_come_back_on_redis(redis_run: Run) -> None:
    run = redis_run
    worker = run.worker("-c", "2")
    assert run.send("add", 2, 3).get(timeout=15) == 5, run.log()
    assert run.send("async_add", 20, 22).get(timeout=10) == 42, run.log()
    results = [run.send("add", i, i) for i in range(50)]
    assert [r.get(timeout=15) for r in results] == [2 * i for i in range(50)], run.log()
    assert results[0].record().state is State.SUCCEEDED
    assert stop(worker) == 0, run.log()
    assert "ready: 2 processes, queues default" in run.log()


def test_retries_follow_the_backoff_on_redis(redis_run: Run) -> None:
    run = redis_run
    worker = run.worker("-c", "1")
    result = run.send("flaky")  # retries=3, retry_delay=0.2, exponential, no jitter
    failure = result.get(timeout=20, propagate=False)
    assert failure.type_name == "ValueError", run.log()
    flaky = run.events("flaky")
    assert [event[3] for event in flaky] == [0, 1, 2, 3]
    gaps = [b - a for a, b in itertools.pairwise(event[0] for event in flaky)]
    for gap, expected in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert expected <= gap < expected + 0.75, gaps  # never early; late on a loaded box
    record = result.record()
    assert record.state is State.FAILED
    assert record.attempts == 4
    wait_for(run.producer.broker.dead_letters, 5)  # settled just after the record
    assert [d.reason for d in run.producer.broker.dead_letters()] == ["MAX_RETRIES"]
    assert stop(worker) == 0, run.log()


def test_a_whole_worker_machine_dies_and_its_tasks_run_elsewhere(redis_run: Run) -> None:
    run = redis_run
    lease = 2.0
    machine_a = run.worker("-c", "2", lease_seconds=str(lease))
    run.wait_ready(machine_a)
    naps = [run.send("nap", 4.0, f"long-{i}") for i in range(2)]
    marks = [run.send("mark", f"queued-{i}") for i in range(4)]  # wait behind the naps
    wait_for(lambda: len(run.events("start")) == 2, 15, run.log)
    pids_a = {event[1] for event in run.events("start")}
    assert len(pids_a) == 2  # both in flight at once, one per child of A

    # The machine dies: the supervisor and its children, all at once, no goodbye.
    os.killpg(machine_a.pid, signal.SIGKILL)
    killed = time.time()
    machine_a.wait(5)
    wait_for(lambda: not group_alive(machine_a.pid), 5, lambda: str(group_alive(machine_a.pid)))
    assert not run.events("end")  # nothing finished on A
    assert all(r.state is not State.SUCCEEDED for r in naps)

    machine_b = run.worker("-c", "2", lease_seconds=str(lease))
    # Once their leases expire the naps are ready again, and B runs them.
    wait_for(lambda: len(run.events("start")) >= 4, lease + 12, run.log)
    again = run.events("start")[2:]
    assert {event[1] for event in again}.isdisjoint(pids_a)
    assert all(killed < event[0] < killed + lease + 10 for event in again), (killed, again)
    assert sorted(event[3] for event in again) == ["long-0", "long-1"]
    assert [r.get(timeout=15) for r in naps] == ["long-0", "long-1"], run.log()
    assert [r.get(timeout=10) for r in marks] == [f"queued-{i}" for i in range(4)]
    # Nothing lost and nothing run twice on B.
    assert sorted(event[3] for event in run.events("end")) == ["long-0", "long-1"]
    assert sorted(event[3] for event in run.events("mark")) == [f"queued-{i}" for i in range(4)]
    stats = run.producer.broker.stats()["default"]
    assert (stats.ready, stats.running) == (0, 0)
    assert stop(machine_b) == 0, run.log()


def test_a_redis_outage_the_worker_rides_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("GOPHERQ_"):
            monkeypatch.delenv(name)
    # A server of this test's own (the shared one is never stopped), keeping its data
    # across the restart: appendonly, and a snapshot at the stop.
    server = services.RedisServer(
        tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always"
    ).start()
    (tmp_path / "run").mkdir()
    run = Run(tmp_path / "run", services.with_prefix(server.url))
    try:
        worker = run.worker("-c", "1")
        assert run.send("add", 1, 2).get(timeout=15) == 3, run.log()
        # Kept by Redis across the outage: due after Redis is back.
        kept = [run.send("mark", f"kept-{i}", countdown=4.0) for i in range(3)]

        server.stop(save=True)
        down = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            run.send("add", 0, 0)  # producers: a clear error after a bounded retry
        assert time.monotonic() - down < 10
        time.sleep(max(0.0, 2.5 - (time.monotonic() - down)))  # the worker keeps failing
        assert worker.poll() is None, run.log()  # up, and its child too
        assert len(psutil.Process(worker.pid).children()) == 1, run.log()
        failures = run.log().count("reserve failed")  # logged, with a backoff: no hot loop
        assert 1 <= failures <= 30, run.log()

        server.start()  # the same port and data directory
        after = run.send("add", 20, 22)
        assert after.get(timeout=20) == 42  # consumed by the same worker, never restarted
        assert [r.get(timeout=5) for r in kept] == [f"kept-{i}" for i in range(3)], run.log()
        assert sorted(e[3] for e in run.events("mark")) == [f"kept-{i}" for i in range(3)]
        assert worker.poll() is None
        assert stop(worker) == 0, run.log()
    finally:
        run.close()
        server.stop()


def test_result_get_right_after_a_redis_restart(tmp_path: Path) -> None:
    server = services.RedisServer(tmp_path / "redis").start()
    producer = GopherQ("producer", broker=services.with_prefix(server.url))
    try:
        result = producer.send_task("tasks.add", (1, 2))  # no worker: it stays queued
        with pytest.raises(ResultTimeout):
            result.get(timeout=0.2)  # a blocking wait leaves its connection in the pool
        server.stop()
        server.start()  # Redis is back (same port, empty) before the next call
        assert services.answers(server.url)
        with pytest.raises(ResultTimeout):  # not BrokerUnavailable: Redis answers
            result.get(timeout=0.2)
    finally:
        producer.close()
        server.stop()
