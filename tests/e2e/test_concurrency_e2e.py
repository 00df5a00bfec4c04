"""Concurrency limits end to end: real worker processes on SQLite and on Redis.

A task with ``concurrency=N`` runs at most N at once across every worker process,
the waiting ones occupy no process (other tasks run meanwhile), and the slot of a
worker killed with SIGKILL comes back within the lease.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from harness import Run, on_each_broker, run, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), on_each_broker]
__all__ = ["run"]  # the fixture


def most_at_once(run: Run) -> int:
    """The most ``limited`` runs between their start and their end at one moment."""
    now = most = 0
    for event in run.events():
        if event[2] == "limited-start":
            now += 1
            most = max(most, now)
        elif event[2] == "limited-end":
            now -= 1
    return most


def test_three_workers_never_run_more_than_the_limit(run: Run) -> None:
    workers = [run.worker("-c", "2") for _ in range(3)]
    for worker in workers:
        run.wait_ready(worker)
    started = time.monotonic()
    results = run.send_batch("limited", [(0.1,)] * 30)
    for result in results:
        result.get(timeout=60)
    elapsed = time.monotonic() - started
    print(f"30 tasks of 0.1 s, concurrency=2, 3 workers x 2 processes: {elapsed:.2f} s")
    assert len(run.events("limited-end")) == 30, run.log()
    assert most_at_once(run) == 2, run.log()


def test_waiting_tasks_hold_no_worker_process(run: Run) -> None:
    workers = [run.worker("-c", "1") for _ in range(3)]
    for worker in workers:
        run.wait_ready(worker)
    limited = run.send_batch("limited", [(1.0,)] * 6)  # 3 s at 2 at once
    adds = run.send_batch("add", [(i, i) for i in range(30)])
    assert [r.get(timeout=30) for r in adds] == [2 * i for i in range(30)], run.log()
    # Every add ran while limited tasks still waited: those took no process.
    assert len(run.events("limited-end")) < 6, run.log()
    for result in limited:
        result.get(timeout=60)
    assert most_at_once(run) == 2, run.log()


def test_the_slot_of_a_killed_worker_comes_back_within_the_lease(run: Run) -> None:
    lease = 2.0
    doomed = run.worker("-c", "1", lease_seconds=str(lease))
    run.wait_ready(doomed)
    holding = run.send("single", "held")  # holds the one slot for a minute
    wait_for(lambda: run.events("single"), 15, run.log)
    survivor = run.worker("-c", "1", lease_seconds=str(lease))
    run.wait_ready(survivor)
    waiting = run.send("single")  # parked: the slot is taken
    os.killpg(doomed.pid, signal.SIGKILL)  # supervisor and child: nothing released
    doomed.wait()
    killed = time.monotonic()
    assert waiting.get(timeout=30) == "done", run.log()
    assert holding.get(timeout=30) == "done", run.log()  # ran again, at once this time
    back = time.monotonic() - killed
    print(f"slot back after SIGKILL: {back:.2f} s (lease {lease} s)")
    assert back < 3 * lease, run.log()


def test_a_task_killed_at_its_time_limit_frees_its_slot_at_once(run: Run) -> None:
    worker = run.worker("-c", "2", lease_seconds="30")
    run.wait_ready(worker)
    killed = run.send("single", "held", timeout=1.0)  # killed after 1 s: FAILED
    wait_for(lambda: run.events("single"), 15, run.log)
    after = run.send("single")
    started = time.monotonic()
    assert after.get(timeout=20) == "done", run.log()
    assert killed.record().state.name == "FAILED", run.log()
    # Not after the 30 s holder lease: the supervisor freed the slot of the child it killed.
    assert time.monotonic() - started < 10, run.log()
