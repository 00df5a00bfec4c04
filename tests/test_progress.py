"""Progress, checkpoints and job history, in-process on memory://."""

from __future__ import annotations

from typing import Any

import pytest
from test_events import drain

from gopherq import ConfigurationError, GopherQ, State, current_task
from gopherq.context import TaskContext

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("t", broker="memory://")


def test_progress_is_stored_and_sent(app: GopherQ) -> None:
    seen: list[Any] = []

    @app.task
    def work(count: int) -> None:
        task = current_task()
        for done in range(1, count + 1):
            task.progress(done, count, f"item {done}")
            seen.append(app.result(task.id).progress)

    result = work.delay(5)
    drain(app)
    assert seen[0] == (1, 5, "item 1")
    assert seen[-1] == (5, 5, "item 5")  # the last one always goes out
    progress = [e.extra for e in app.events.subscribe("task-progress", since="0", timeout=0)]
    assert progress[0] == {"done": 1, "total": 5, "message": "item 1"}
    assert progress[-1]["done"] == 5
    assert len(progress) < 5  # reports 0.1 s apart at most; the rest fold into the next
    assert result.progress == (5, 5, "item 5")
    assert result.progress is not None and result.progress.fraction == 1.0


def test_checkpoints_carry_over_retries(app: GopherQ) -> None:
    states: list[Any] = []

    @app.task(retries=2, retry_delay=0.01, jitter=False)
    def resumable() -> str:
        task = current_task()
        states.append(task.checkpoint_state)
        if task.attempt == 0:
            task.checkpoint({"page": 3})
            raise ValueError("flaky")
        if task.attempt == 1:
            raise ValueError("flaky again, no new checkpoint")
        return "done"

    result = resumable.delay()
    drain(app)
    assert result.get(timeout=1) == "done"
    assert states == [None, {"page": 3}, {"page": 3}]
    record = result.record()
    assert record is not None and record.checkpoint is None  # dropped on success


def test_a_checkpoint_is_kept_on_failure(app: GopherQ) -> None:
    @app.task
    def fails() -> None:
        current_task().checkpoint([1, 2])
        raise ValueError("x")

    result = fails.delay()
    drain(app)
    record = result.record()
    assert record is not None and record.state is State.FAILED
    assert record.checkpoint is not None and app.codec.unpack(record.checkpoint) == [1, 2]


def test_progress_of_an_ignore_result_task_is_not_left_running(app: GopherQ) -> None:
    @app.task(ignore_result=True)
    def quiet() -> None:
        current_task().progress(1)

    result = quiet.delay()
    drain(app)
    assert result.state is State.SUCCEEDED  # the record it began is finished, so it expires


def test_a_context_outside_a_runner_has_no_control() -> None:
    context = TaskContext(id="x", name="t", queue="q", attempt=0, retries=0)
    with pytest.raises(Exception, match="no job control"):
        context.progress(1)


def test_job_history(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def fails() -> None:
        raise ValueError("x")

    sent = [add.delay(1, 1), fails.delay(), add.delay(2, 2)]
    drain(app)
    assert [j.id for j in app.jobs()] == [r.id for r in reversed(sent)]
    assert [j.id for j in app.jobs(state="failed")] == [sent[1].id]
    assert [j.id for j in app.jobs(state=State.SUCCEEDED, limit=1)] == [sent[2].id]
    assert [j.id for j in app.jobs(task=add.name, queue="default")] == [sent[2].id, sent[0].id]
    assert app.jobs(queue="other") == []
    with pytest.raises(ConfigurationError, match="unknown state"):
        app.jobs(state="done")
