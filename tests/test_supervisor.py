"""The supervisor's bookkeeping, driven step by step: no processes, no races.

A ``_Child`` stands for a forked child; the test writes its slot as the child
would, and ``os.kill`` only records what the supervisor would signal.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest

from gopherq import GopherQ, State
from gopherq.brokers import Delivery
from gopherq.worker import Worker
from gopherq.worker.slots import Slot
from gopherq.worker.supervisor import _Child

PID = 424242


@pytest.fixture
def app() -> GopherQ:
    app = GopherQ("t", broker="memory://")

    @app.task(name="hang", timeout=0.5)
    def hang() -> None:
        pass

    @app.task(name="quick")
    def quick() -> None:
        pass

    return app


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    yield sent


def supervise(app: GopherQ) -> tuple[Worker, Slot, _Child]:
    """A supervisor with one (pretend) child and its slot."""
    worker = Worker(app, concurrency=1, loglevel=None)
    worker._slots = Slot.allocate(1, app.settings.prefetch)
    child = _Child(0, PID, time.monotonic() - 60)
    worker._children[PID] = child
    return worker, worker._slots[0], child


def reserve(app: GopherQ, *names: str) -> list[Delivery]:
    ids = [app.send_task(name).id for name in names]
    deliveries = app.broker.reserve(["default"], len(ids), 0)
    assert [d.id for d in deliveries] == ids
    return deliveries


def reaped(worker: Worker, child: _Child) -> None:
    """The child died of SIGKILL and the supervisor reaped it."""
    del worker._children[child.pid]
    worker._exited(child, -signal.SIGKILL)


def deliveries_now(app: GopherQ) -> dict[str, int]:
    """Each ready message's delivery count (reserving them)."""
    return {d.id: d.deliveries for d in app.broker.reserve(["default"], 10, 0)}


def test_a_time_limit_kill_settles_the_task_it_was_for(
    app: GopherQ, kills: list[tuple[int, int]]
) -> None:
    x, y = reserve(app, "hang", "quick")
    worker, slot, child = supervise(app)
    slot.hold([x, y])
    slot.begin(x, "hang", None, 0.5, now=time.monotonic() - 1)  # past its deadline
    worker._enforce_time_limits()
    assert kills == [(PID, signal.SIGKILL)]
    # Before the signal lands, the child finishes X and begins Y.
    slot.end()
    slot.begin(y, "quick", None, None, now=time.monotonic())
    reaped(worker, child)
    assert {d.id: d.reason for d in app.broker.dead_letters()} == {x.id: "TIME_LIMIT"}
    record = app.backend.get(x.id)
    assert record is not None
    assert record.state is State.FAILED
    assert deliveries_now(app) == {y.id: 1}  # back uncounted: the kill was not for it
    assert worker._respawns  # and the child is replaced


def test_a_time_limit_kill_charges_nothing_when_its_task_was_settled(
    app: GopherQ, kills: list[tuple[int, int]]
) -> None:
    x, y = reserve(app, "hang", "quick")
    worker, slot, child = supervise(app)
    slot.hold([x, y])
    slot.begin(x, "hang", None, 0.5, now=time.monotonic() - 1)
    worker._enforce_time_limits()
    slot.end()
    app.broker.ack([x])  # the child settled X just in time
    slot.settle()
    slot.begin(y, "quick", None, None, now=time.monotonic())
    reaped(worker, child)
    assert app.broker.dead_letters() == []
    assert deliveries_now(app) == {y.id: 1}


def test_a_cancel_kill_settles_the_task_it_was_for(
    app: GopherQ, kills: list[tuple[int, int]]
) -> None:
    x, y = reserve(app, "quick", "quick")
    worker, slot, child = supervise(app)
    slot.hold([x, y])
    slot.begin(x, "quick", None, None, now=time.monotonic())
    child.stopping, child.stop_by = x.id, 0.0  # cancelled, and its grace is over
    worker._kill_overdue([(child, slot.read())], time.monotonic())
    assert kills == [(PID, signal.SIGKILL)]
    slot.end()
    slot.begin(y, "quick", None, None, now=time.monotonic())
    reaped(worker, child)
    record = app.backend.get(x.id)
    assert record is not None
    assert record.state is State.CANCELLED
    assert app.broker.locate(x.id) is None  # settled
    assert deliveries_now(app) == {y.id: 1}


def test_a_child_that_died_by_itself_is_charged(app: GopherQ) -> None:
    x, y = reserve(app, "quick", "quick")
    worker, slot, child = supervise(app)
    slot.hold([x, y])
    slot.begin(x, "quick", None, None, now=time.monotonic())
    reaped(worker, child)
    assert deliveries_now(app) == {x.id: 2, y.id: 1}


def test_a_delivery_its_child_died_on_before_recording_it_is_charged(app: GopherQ) -> None:
    x, y = reserve(app, "quick", "quick")
    worker, slot, child = supervise(app)
    slot.hold([x, y])
    slot.start()  # then the child died, before ``begin`` wrote its running entry
    reaped(worker, child)
    assert deliveries_now(app) == {x.id: 2, y.id: 1}  # max_deliveries ends such a loop


def test_garbage_in_a_dead_childs_slot_does_not_stop_the_supervisor(app: GopherQ) -> None:
    (x,) = reserve(app, "quick")
    worker, slot, child = supervise(app)
    slot.hold([x])
    box = slot._state
    seq = box.seq + 1
    half = box._offset + 8 + (seq & 1) * box._half
    box._memory[half : half + 4] = (100).to_bytes(4, "little")
    box._memory[half + 4 : half + 104] = b"\xc1" * 100
    box._memory[box._offset : box._offset + 8] = seq.to_bytes(8, "little")
    reaped(worker, child)
    assert worker._respawns  # replaced; the lease brings X back
    assert slot.read() == slot.read(final=True)


def test_a_failing_step_is_logged_once_and_retried(
    app: GopherQ, caplog: pytest.LogCaptureFixture
) -> None:
    worker, _, _ = supervise(app)
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) in (1, 2, 4):
            raise RuntimeError(f"step failure {len(calls)}")

    with caplog.at_level(logging.ERROR, "gopherq.worker"):
        for _ in range(4):
            worker._step(flaky)
    assert len(calls) == 4
    failures = [r for r in caplog.records if "supervisor step flaky failed" in r.message]
    assert len(failures) == 2  # the first of each run of failures


@pytest.mark.parametrize("frozen_before", [False, True])
def test_a_child_is_forked_with_the_collector_frozen_and_the_supervisor_thaws(
    app: GopherQ, monkeypatch: pytest.MonkeyPatch, frozen_before: bool
) -> None:
    """The child inherits every object frozen (its collections never walk them); the
    supervisor collects as before, unless the app had frozen objects itself."""
    import gc

    at_fork: list[int] = []

    def fork() -> int:
        at_fork.append(gc.get_freeze_count())
        return PID

    monkeypatch.setattr(os, "fork", fork)
    worker = Worker(app, concurrency=1, loglevel=None)
    worker._slots = Slot.allocate(1, app.settings.prefetch)
    if frozen_before:
        gc.freeze()
    try:
        worker._spawn(0)
        assert at_fork and at_fork[0] > 0
        assert PID in worker._children
        assert (gc.get_freeze_count() > 0) is frozen_before
    finally:
        gc.unfreeze()
