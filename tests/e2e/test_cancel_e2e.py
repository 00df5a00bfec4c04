"""End to end: cancelling tasks queued, scheduled and running, on SQLite and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from harness import Run, on_each_broker, run, wait_for

from gopherq import State, TaskFailed
from gopherq.events import Event, Subscription

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90), on_each_broker]
__all__ = ["run"]  # the fixture


def cancelled_events(subscription: Subscription, ids: set[str]) -> dict[str, Event]:
    """The ``task-cancelled`` events of ``ids``, waiting for all of them."""
    found: dict[str, Event] = {}
    for event in subscription:
        if event.id in ids:
            found[event.id] = event
        if found.keys() == ids:
            break
    return found


def failure(result: object) -> TaskFailed:
    with pytest.raises(TaskFailed) as info:
        result.get(timeout=15)  # type: ignore[attr-defined]
    return info.value


def cli_cancel(run: Run, *ids: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    env["GOPHERQ_BROKER_URL"] = run.url
    command = [sys.executable, "-m", "gopherq", "cancel", "-A", "tasks", *ids]
    return subprocess.run(
        command, check=False, cwd=run.path, env=env, capture_output=True, text=True
    )


def test_queued_and_scheduled_tasks_cancelled_before_any_worker_never_run(run: Run) -> None:
    events = run.producer.events.subscribe("task-cancelled", timeout=15)
    queued = run.send("mark", "queued")
    scheduled = run.send("mark", "scheduled", countdown=0.5)
    kept = run.send("mark", "kept")
    assert queued.cancel() and scheduled.cancel()
    assert queued.state is State.CANCELLED and scheduled.state is State.CANCELLED
    seen = cancelled_events(events, {queued.id, scheduled.id})
    assert seen[queued.id].extra["was"] == "QUEUED"
    assert seen[scheduled.id].extra["was"] == "SCHEDULED"

    run.worker("--burst", "-c", "1")
    assert kept.get(timeout=15) == "kept", run.log()
    time.sleep(0.6)  # past the scheduled one's eta
    assert [e[3] for e in run.events("mark")] == ["kept"]
    error = failure(queued)
    assert error.type_name == "TaskCancelled"
    assert "before it started" in error.message
    # Too late: finished tasks are not cancelled, and the command says so.
    assert not kept.cancel()
    done = cli_cancel(run, kept.id)
    assert done.returncode == 1 and "not found" in done.stdout, done


def test_a_running_task_that_checks_cancelled_stops_cleanly(run: Run) -> None:
    events = run.producer.events.subscribe("task-cancelled", timeout=15)
    run.wait_ready(run.worker("-c", "1"))
    result = run.send("patient", 60)
    wait_for(lambda: run.events("patient-start"), 15, run.log)
    asked = time.monotonic()
    assert result.cancel()
    error = failure(result)
    took = time.monotonic() - asked
    print(f"cancel to CANCELLED record: {took * 1000:.0f} ms")
    assert error.type_name == "TaskCancelled" and "while running" in error.message
    assert took < 5, took  # the supervisor polls twice a second
    assert run.events("patient-stopped"), run.log()
    assert "killing process" not in run.log()
    (event,) = cancelled_events(events, {result.id}).values()
    assert event.worker and event.extra["was"] == "STARTED"
    assert run.send("add", 1, 2).get(timeout=15) == 3, run.log()


def test_a_running_task_that_ignores_the_cancel_is_killed_after_the_grace(run: Run) -> None:
    run.wait_ready(run.worker("-c", "1", cancel_grace="1"))
    result = run.send("nap", 60, "stubborn")
    wait_for(lambda: run.events("start"), 15, run.log)
    done = cli_cancel(run, result.id)
    assert done.returncode == 0 and "running" in done.stdout, done
    error = failure(result)
    assert error.type_name == "TaskCancelled" and "killed" in error.message
    assert "did not stop within 1.0s of its cancel" in run.log()
    assert not run.events("end")
    # The killed process was replaced: the worker goes on.
    assert run.send("add", 2, 3).get(timeout=15) == 5, run.log()
    assert result.state is State.CANCELLED
