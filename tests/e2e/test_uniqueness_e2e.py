"""End to end: idempotency keys held past a job's end, and unique tasks, with real
worker processes on SQLite and Redis."""

from __future__ import annotations

import pytest
from harness import Run, on_each_broker, run, stop, wait_for

from gopherq import State

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90), on_each_broker]
__all__ = ["run"]  # the fixture


def settled(run: Run, id: str) -> bool:
    """Whether the broker no longer holds message ``id`` (its worker acked it)."""
    return run.producer.broker.locate(id) is None


def test_a_finished_job_answers_for_its_key(run: Run) -> None:
    first = run.send("add", 2, 3, key="sum-1")
    worker = run.worker("-c", "1")
    assert first.get(timeout=15) == 5, run.log()
    wait_for(lambda: settled(run, first.id), 10, run.log)
    again = run.send("add", 40, 2, key="sum-1")
    assert again.id == first.id
    assert again.get(timeout=5) == 5  # the first job's result; nothing was sent
    assert run.producer.broker.stats()["default"].ready == 0
    other = run.send("add", 40, 2, key="sum-2")
    assert other.get(timeout=15) == 42
    assert stop(worker) == 0, run.log()


def test_a_failed_job_frees_its_key(run: Run) -> None:
    failed = run.send("fails", key="f-1")
    worker = run.worker("-c", "1")
    assert failed.get(timeout=15, propagate=False).type_name == "RuntimeError", run.log()
    wait_for(lambda: run.producer.broker.locate(failed.id) is State.DEAD, 10, run.log)
    again = run.send("fails", key="f-1")
    assert again.id != failed.id  # sent anew
    assert again.get(timeout=15, propagate=False).type_name == "RuntimeError"
    assert stop(worker) == 0, run.log()


def test_a_unique_task_runs_once_per_arguments(run: Run) -> None:
    # The producer knows the task by name and its options, as a service sharing the
    # app's declarations would.
    unique_mark = run.producer.task(name="tasks.mark", unique=True)(lambda label: label)
    sent = [unique_mark.delay("a"), unique_mark.delay("a")]
    assert len({r.id for r in sent}) == 1
    worker = run.worker("-c", "2")
    assert sent[0].get(timeout=15) == "a", run.log()
    wait_for(lambda: settled(run, sent[0].id), 10, run.log)
    late = unique_mark.delay("a")
    assert (late.id, late.get(timeout=5)) == (sent[0].id, "a")
    assert unique_mark.delay("b").get(timeout=15) == "b"
    assert stop(worker) == 0, run.log()
    assert sorted(event[3] for event in run.events("mark")) == ["a", "b"]
