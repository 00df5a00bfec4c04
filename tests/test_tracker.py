"""The job tracker while the result store fails: best-effort STARTED and progress
records, spaced out by a ``StoreBackoff``; checkpoints raise in the task."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
from test_events import drain

from gopherq import GopherQ, State, current_task
from gopherq import tracker as tracker_module
from gopherq.context import TaskContext
from gopherq.errors import BrokerUnavailable
from gopherq.results import JobRecord
from gopherq.results.memory import MemoryResultBackend
from gopherq.tracker import StoreBackoff

pytestmark = pytest.mark.timeout(30)


class DownBackend(MemoryResultBackend):
    """Fails every store of a STARTED record (progress, checkpoints) while ``down``."""

    down = True

    def store(self, records: Sequence[JobRecord]) -> None:
        if self.down and any(r.state is State.STARTED for r in records):
            raise BrokerUnavailable("result store down")
        super().store(records)


def test_store_backoff_spaces_out_attempts_and_logs_once_per_outage(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(tracker_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    context = TaskContext(id="x", name="tasks.t", queue="q", attempt=0, retries=0)
    backoff = StoreBackoff()
    assert backoff.ready()
    with caplog.at_level(logging.INFO, "gopherq.worker"):
        for pause in (0.1, 0.2, 0.4):
            backoff.failed(context, "its STARTED record", BrokerUnavailable("down"))
            assert not backoff.ready()
            clock.now += pause
            assert backoff.ready()
        backoff.succeeded()
        backoff.failed(context, "its progress", BrokerUnavailable("down again"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per outage
    assert "could not store its STARTED record" in warnings[0]
    assert "could not store its progress" in warnings[1]
    assert "the result store works again" in caplog.text


def test_a_task_runs_on_while_its_progress_cannot_be_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = GopherQ("t", broker="memory://", backend=DownBackend())

    @app.task(timeout=30)
    def work(count: int) -> int:
        for done in range(1, count + 1):
            current_task().progress(done, count)
        return count

    result = work.delay(50)
    with caplog.at_level(logging.WARNING, "gopherq.worker"):
        drain(app)
    assert result.get(timeout=1) == 50
    assert len([r for r in caplog.records if "could not store" in r.message]) == 1


def test_a_checkpoint_that_cannot_be_stored_fails_the_attempt() -> None:
    backend = DownBackend()
    app = GopherQ("t", broker="memory://", backend=backend)

    @app.task(retries=1, retry_delay=0, autoretry_for=(BrokerUnavailable,))
    def saves() -> int:
        task = current_task()
        backend.down = task.attempt == 0
        task.checkpoint({"at": 1})  # raises in the task on the first attempt
        return task.attempt

    result = saves.delay()
    drain(app)
    assert result.get(timeout=1) == 1
    record = result.record()
    assert record is not None
    assert (record.state, record.attempts) == (State.SUCCEEDED, 2)
