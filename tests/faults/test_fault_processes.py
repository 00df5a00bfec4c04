"""Faults of the worker's own processes, on SQLite and Redis: kills, stops, signals.

Each scenario sends work to real ``gopherq worker`` processes, injects its
fault, lets the backlog drain and checks the ledger (``ledger.py``): nothing
lost, duplicates at most one per process killed or stopped, nothing left
leased or STARTED.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger import BROKERS, FaultRun, open_fault_run, scaled, sigkill, stop, wait_for

from gopherq import State

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(90, 900))]


@pytest.fixture(params=BROKERS)
def fault_run(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultRun]:
    """A ``FaultRun`` on each broker (a private Redis for the Redis runs)."""
    with open_fault_run(request.param, tmp_path, monkeypatch) as run:
        yield run


def test_child_sigkill(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker("-c", "2")
    run.send_work(scaled(40, 1000), "work", 0.05)
    kills = scaled(2, 20)
    for _ in range(kills):
        run.wait_progress(len(run.completed()) + 3)
        run.fault()
        assert sigkill(run.busy_child(worker))
    run.wait_drained()
    run.check("child SIGKILL", kills=kills, recovery_bound=scaled(30, 120))
    assert stop(worker) == 0, run.log()


def test_whole_worker_sigkill(fault_run: FaultRun) -> None:
    run = fault_run
    first = run.worker("-c", "2", lease_seconds="2")
    run.send_work(scaled(40, 1000), "work", 0.05)
    run.wait_progress(5)
    run.fault()
    os.killpg(first.pid, signal.SIGKILL)  # the machine dies: supervisor and children
    first.wait(5)
    second = run.worker("-c", "2", lease_seconds="2")
    run.wait_drained()
    run.check("whole-worker SIGKILL", kills=2, recovery_bound=scaled(30, 120))
    assert stop(second) == 0, run.log()


def test_sigstop_past_the_lease(fault_run: FaultRun) -> None:
    run = fault_run
    lease = 1.5  # short, yet renewed in time on a busy machine
    worker = run.worker("-c", "2", lease_seconds=str(lease))
    run.send_work(scaled(30, 1000), "work", 0.1)
    run.wait_progress(3)
    run.fault()
    stopped = run.busy_child(worker)
    os.kill(stopped, signal.SIGSTOP)  # frozen with its task, renewing no lease
    try:
        time.sleep(3 * lease)  # the other child takes the task over when its lease ends
    finally:
        os.kill(stopped, signal.SIGCONT)
    run.wait_drained()
    run.check("SIGSTOP past the lease", kills=1, recovery_bound=scaled(30, 120))
    assert stop(worker) == 0, run.log()


def test_sigterm_drains(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker("-c", "2")
    run.send_work(scaled(40, 1000), "work", 0.05)
    run.wait_progress(5)
    run.fault()
    assert stop(worker) == 0, run.log()  # finishes what runs, gives back the rest
    assert run.worker("-c", "2", "--burst").wait(60) == 0, run.log()
    run.wait_drained()
    run.check("SIGTERM drain", kills=0, recovery_bound=scaled(30, 120))


def test_double_sigint(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker("-c", "2", lease_seconds="2")
    run.send_work(scaled(10, 100), "work", 0.5)
    run.wait_progress(2)
    run.busy_child(worker)
    run.fault()
    worker.send_signal(signal.SIGINT)
    time.sleep(0.05)
    worker.send_signal(signal.SIGINT)  # now: running tasks are killed
    assert worker.wait(15) in (0, 1), run.log()  # 0 if they had finished already
    assert run.worker("-c", "2", "--burst", lease_seconds="2").wait(60) == 0, run.log()
    run.wait_drained()
    run.check("double SIGINT", kills=2, recovery_bound=scaled(30, 120))


def test_crash_every_time_ends_worker_lost(fault_run: FaultRun) -> None:
    run = fault_run
    deliveries = 3
    worker = run.worker("-c", "2", max_deliveries=str(deliveries))
    crashing = run.send_work(scaled(2, 10), "crash")
    healthy = run.send_work(scaled(20, 500), "work", 0.02)
    run.fault()
    run.wait_drained(healthy)
    wait_for(lambda: len(run.producer.broker.dead_letters()) == len(crashing), 30, run.log)
    letters = {d.id: d.reason for d in run.producer.broker.dead_letters()}
    assert letters == dict.fromkeys(crashing, "WORKER_LOST"), run.log()
    assert all(run.producer.result(id).state is State.DEAD for id in crashing)
    starts = [line[1] for line in run.lines("start") if line[1] in crashing]
    assert sorted(starts) == sorted(crashing * deliveries)  # counted: no crash loop
    run.check("crash every time", kills=len(starts), expected=healthy,
              recovery_bound=scaled(30, 120))  # fmt: skip
    assert stop(worker) == 0, run.log()


def test_hard_time_limits_among_short_tasks(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker("-c", "2")
    run.wait_ready(worker)
    run.fault()
    hanging, healthy = [], []
    for _ in range(scaled(4, 40)):  # the killed processes were running short tasks just before
        healthy += run.send_work(10, "work", 0.01)
        hanging += run.send_work(1, "hangs")
    run.wait_drained(healthy)
    letters = run.producer.broker.dead_letters
    wait_for(lambda: len(letters(limit=1000)) == len(hanging), 30, run.log)
    assert {d.id: d.reason for d in letters(limit=1000)} == dict.fromkeys(hanging, "TIME_LIMIT")
    assert all(run.producer.result(id).state is State.FAILED for id in hanging)
    starts = [line[1] for line in run.lines("start") if line[1] in hanging]
    assert sorted(starts) == sorted(hanging), run.log()  # each ran once: no retry
    run.check("hard time limits", kills=len(hanging), expected=healthy,
              recovery_bound=scaled(30, 120))  # fmt: skip
    assert stop(worker) == 0, run.log()


def test_random_child_kills_during_a_long_run(fault_run: FaultRun) -> None:
    run = fault_run
    count = scaled(300, 10_000)
    worker = run.worker("-c", "2")
    run.send_work(count, "work", 0.01)
    run.wait_progress(10)
    run.fault()
    kills = 0
    deadline = time.monotonic() + scaled(60, 900)
    while len(run.completed()) < count and time.monotonic() < deadline:
        children = run.children(worker)
        if children and sigkill(random.choice(children)):
            kills += 1
        time.sleep(0.5)
    run.wait_drained(timeout=scaled(60, 300))
    run.check("random child kills every 0.5 s", kills=kills, recovery_bound=scaled(90, 900))
    assert stop(worker) == 0, run.log()


def test_a_stale_worker_never_stores_over_a_finished_record(fault_run: FaultRun) -> None:
    run = fault_run
    lease = 1.0
    first = run.worker("-c", "1", lease_seconds=str(lease))
    run.wait_ready(first)
    (id,) = run.send_work(1, "stalls", 0.5)
    stale = run.busy_child(first)
    run.fault()
    os.kill(stale, signal.SIGSTOP)  # its lease runs out while it is frozen
    try:
        second = run.worker("-c", "1", lease_seconds=str(lease))
        result = run.producer.result(id)
        assert result.get(timeout=20) == "ran through", run.log()  # the second ran it
    finally:
        os.kill(stale, signal.SIGCONT)  # the stale one ends its run in a retry
    wait_for(lambda: run.lines("stale"), 10, run.log)
    time.sleep(1.0)  # its outcome would be stored by now
    record = result.record()
    assert record.state is State.SUCCEEDED, (record, run.log())
    assert result.get(timeout=5) == "ran through"
    run.check("stale worker after its lease", kills=1, recovery_bound=scaled(30, 120))
    assert stop(first) == 0, run.log()
    assert stop(second) == 0, run.log()
