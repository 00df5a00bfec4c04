"""End to end: ``python -m gopherq worker`` processes on a SQLite file."""

from __future__ import annotations

import itertools
import os
import signal
import time
from typing import Any

import psutil
import pytest
from harness import Run, run, stop, wait_for

from gopherq import State
from gopherq.brokers import Envelope
from gopherq.message import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]
__all__ = ["run"]  # the fixture


def test_results_come_back(run: Run) -> None:
    worker = run.worker("-c", "2")
    assert run.send("add", 2, 3).get(timeout=15) == 5, run.log()
    assert run.send("async_add", 20, 22).get(timeout=5) == 42
    assert run.send("soft").get(timeout=5) == "cleaned up"  # SIGALRM works in children
    results = [run.send("add", i, i) for i in range(100)]
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(100)]
    assert stop(worker) == 0, run.log()
    assert "ready: 2 processes, queues default" in run.log()


def test_retries_follow_the_backoff(run: Run) -> None:
    worker = run.worker("-c", "1")
    result = run.send("flaky")
    failure = result.get(timeout=20, propagate=False)
    assert failure.type_name == "ValueError", run.log()
    times = [event[0] for event in run.events("flaky")]
    assert [event[3] for event in run.events("flaky")] == [0, 1, 2, 3]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, expected in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert expected <= gap < expected + 0.5, gaps
    record = result.record()
    assert record.state is State.FAILED
    assert record.attempts == 4
    wait_for(run.producer.broker.dead_letters, 5)  # settled just after the record
    assert [d.reason for d in run.producer.broker.dead_letters()] == ["MAX_RETRIES"]
    assert "failed, retry in" in run.log()  # failures are logged with their traceback
    assert "Traceback" in run.log()
    assert stop(worker) == 0


def test_each_dead_letter_reason_then_burst_exits(run: Run) -> None:
    garbage = new_id()
    run.producer.broker.enqueue([Envelope(garbage, "default", 2, b"\xc1 not msgpack")])
    expected = {
        garbage: ("DECODE_ERROR", State.DEAD),
        run.send("nowhere").id: ("UNKNOWN_TASK", State.DEAD),
        run.send("add", 1).id: ("BAD_ARGS", State.DEAD),
        run.send("add", 1, 2, expires=0.001).id: ("EXPIRED", State.EXPIRED),
        run.send("fails").id: ("MAX_RETRIES", State.FAILED),
        run.send("rejects").id: ("REJECTED", State.DEAD),
    }
    worker = run.worker("-c", "2", "--burst")
    assert worker.wait(20) == 0, run.log()
    letters = {d.id: d.reason for d in run.producer.broker.dead_letters()}
    assert letters == {id: reason for id, (reason, _) in expected.items()}, run.log()
    for id, (_, state) in expected.items():
        assert run.producer.result(id).state is state


def test_burst_on_empty_queues_exits_at_once(run: Run) -> None:
    started = time.monotonic()
    assert run.worker("-c", "2", "--burst").wait(20) == 0, run.log()
    assert time.monotonic() - started < 10


def test_priority_order(run: Run) -> None:
    sent = [("bulk-1", 4), ("normal-1", 2), ("critical", 0), ("normal-2", 2), ("high", 1)]
    sent += [("low", 3), ("bulk-2", 4), ("normal-3", 2), ("critical-2", 0)]
    for label, priority in sent:  # while no worker runs
        run.send("mark", label, priority=priority)
    assert run.worker("-c", "1", "--burst").wait(20) == 0, run.log()
    ran = [event[3] for event in run.events("mark")]
    assert ran == [label for label, _ in sorted(sent, key=lambda item: item[1])]


def test_eta_task_never_starts_early(run: Run) -> None:
    worker = run.worker("-c", "2")
    run.wait_ready(worker)
    sent = time.time()
    result = run.send("mark", "later", countdown=1.0)
    assert result.get(timeout=10) == "later"
    ran = run.events("mark")[0][0]
    assert sent + 1.0 <= ran < sent + 2.0
    assert stop(worker) == 0


def test_sigterm_drains_with_nothing_lost(run: Run) -> None:
    worker = run.worker("-c", "2")
    for result in [run.send("add", i, i) for i in range(30)]:  # short: batches now
        result.get(timeout=15)
    naps = [run.send("nap", 0.5, str(i)) for i in range(8)]
    wait_for(lambda: run.events("start"), 10, run.log)
    began = time.monotonic()
    assert stop(worker) == 0, run.log()
    assert time.monotonic() - began < 5
    states = [r.state for r in naps]
    assert set(states) <= {State.SUCCEEDED, State.QUEUED}, states
    finished = states.count(State.SUCCEEDED)
    assert finished == len(run.events("end")) >= 1  # tasks in flight finished
    stats = run.producer.broker.stats()["default"]
    assert (stats.ready, stats.running) == (8 - finished, 0)
    again = run.producer.broker.reserve(["default"], 10, 0)
    assert all(d.deliveries == 1 for d in again)  # giving back did not count


def test_sigterm_gives_back_prefetched_tasks(run: Run) -> None:
    worker = run.worker("-c", "1")
    naps = reserve_batch_at_once(run, size=6)
    assert stop(worker) == 0, run.log()
    assert [r.state for r in naps] == [State.SUCCEEDED] + [State.QUEUED] * 5
    assert "gave back 5 unstarted tasks" in run.log()
    again = run.producer.broker.reserve(["default"], 10, 0)
    assert [d.deliveries for d in again] == [1] * 5


def reserve_batch_at_once(run: Run, size: int, tries: int = 3) -> list[Any]:
    """Send ``size`` naps of 0.3 s that the worker reserves in one batch, and wait
    until it runs the first; the rest are then prefetched.

    A worker prefetches only while its tasks average under ``SHORT_TASK``, so the
    naps are first run with no sleep; on a machine loaded enough to make even those
    slow, the worker takes one at a time, and the round is tried again.
    """
    for _ in range(tries):
        for result in [run.send("nap", 0) for _ in range(20)]:
            result.get(timeout=15)
        started = len(run.events("start"))
        naps = run.send_batch("nap", [(0.3, str(i)) for i in range(size)])
        wait_for(lambda: run.events("start")[started:], 10, run.log)  # noqa: B023 (called at once)
        if run.producer.broker.stats()["default"].running == size:
            return naps
        for result in naps:
            result.get(timeout=15)
    raise AssertionError(f"the worker never reserved {size} short tasks at once")


def test_shutdown_timeout_kills_stragglers_and_requeues(run: Run) -> None:
    worker = run.worker("-c", "1", "--shutdown-timeout", "0.5", lease_seconds="60")
    result = run.send("nap", 30, "straggler")
    wait_for(lambda: run.events("start"), 10, run.log)
    began = time.monotonic()
    assert stop(worker) == 0, run.log()
    assert time.monotonic() - began < 5
    assert result.state is State.QUEUED  # back at once, not after the 60 s lease
    assert "shutdown timeout" in run.log()


def test_sigkill_of_a_child_loses_nothing(run: Run) -> None:
    worker = run.worker("-c", "2", lease_seconds="60")
    result = run.send("nap", 1.0, "victim")
    wait_for(lambda: run.events("start"), 15, run.log)
    victim = run.events("start")[0][1]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    assert result.get(timeout=15) == "victim"
    assert time.monotonic() - killed < 5  # redelivered at once, not after the lease
    starts = run.events("start")
    assert len(starts) == 2
    assert starts[1][1] != victim
    assert len(psutil.Process(worker.pid).children()) == 2  # replaced
    assert stop(worker) == 0


def test_a_task_that_kills_its_worker_ends_worker_lost(run: Run) -> None:
    worker = run.worker("-c", "1", lease_seconds="60", max_deliveries="3")
    result = run.send("suicide")
    failure = result.get(timeout=20, propagate=False)
    assert "max_deliveries=3" in failure.message, run.log()
    assert result.state is State.DEAD
    assert len(run.events("suicide")) == 3
    wait_for(run.producer.broker.dead_letters, 5)
    assert [d.reason for d in run.producer.broker.dead_letters()] == ["WORKER_LOST"]
    assert run.send("add", 1, 1).get(timeout=10) == 2  # and the worker still works
    assert stop(worker) == 0


def test_hard_time_limit_kills_only_its_child(run: Run) -> None:
    worker = run.worker("-c", "3")
    run.wait_ready(worker)
    other = run.send("nap", 2.0, "other")
    wait_for(lambda: run.events("start"), 10, run.log)
    hung = run.send("hang")  # timeout 0.5 s, one retry
    override = run.send("nap", 30, "override", timeout=0.3)  # the message's own limit
    for result in (hung, override):
        failure = result.get(timeout=15, propagate=False)
        assert failure.type_name == "TimeLimitExceeded", run.log()
        assert result.record().state is State.FAILED
    assert hung.record().attempts == len(run.events("hang")) == 2  # retried once
    wait_for(lambda: len(run.producer.broker.dead_letters()) == 2, 5)  # just after the records
    assert {d.reason for d in run.producer.broker.dead_letters()} == {"TIME_LIMIT"}
    assert other.get(timeout=10) == "other"
    starts = {event[3]: event[1] for event in run.events("start")}
    (end,) = run.events("end")
    assert end[1] == starts["other"]  # its process lived on
    assert starts["other"] not in {event[1] for event in run.events("hang")}
    assert "exceeded its hard time limit" in run.log()
    wait_for(lambda: len(psutil.Process(worker.pid).children()) == 3, 5)
    assert stop(worker) == 0


def test_idle_worker_is_cheap_and_quick(run: Run) -> None:
    worker = run.worker("-c", "2")
    run.wait_ready(worker)
    time.sleep(0.5)
    processes = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children()]
    assert len(processes) == 3

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    before, began = cpu(), time.monotonic()
    time.sleep(3)
    percent = 100 * (cpu() - before) / (time.monotonic() - began)
    latencies = []
    for _ in range(5):
        time.sleep(0.3)  # idle again: the children sleep in reserve
        sent = time.perf_counter()
        run.send("add", 1, 2).get(timeout=5)
        latencies.append(time.perf_counter() - sent)
    print(f"\nidle CPU of -c 2: {percent:.2f}% of a core; round trips (ms): ", end="")
    print(", ".join(f"{1000 * t:.1f}" for t in latencies))
    assert percent < 10
    assert max(latencies) < 1.0
    assert stop(worker) == 0


def test_a_second_sigterm_exits_at_once(run: Run) -> None:
    worker = run.worker("-c", "1", lease_seconds="60")
    result = run.send("nap", 30, "interrupted")
    wait_for(lambda: run.events("start"), 15, run.log)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 1, run.log()
    assert time.monotonic() - began < 2
    assert result.state is State.QUEUED  # given back, not left to its lease


def test_recycles_children_after_max_tasks(run: Run) -> None:
    for i in range(6):
        run.send("mark", str(i))
    worker = run.worker("-c", "1", "--burst", "--max-tasks-per-child", "2")
    assert worker.wait(20) == 0, run.log()
    pids = [event[1] for event in run.events("mark")]
    assert len(pids) == 6
    assert len(set(pids)) == 3, pids
    assert run.log().count("process recycled") == 3


def test_children_stop_when_the_supervisor_dies(run: Run) -> None:
    worker = run.worker("-c", "2")
    run.wait_ready(worker)
    children = psutil.Process(worker.pid).children()
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(5)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, run.log()
