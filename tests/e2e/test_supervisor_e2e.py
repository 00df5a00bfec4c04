"""End to end: no message and no result-store fault stops a worker or its processes."""

from __future__ import annotations

import shutil

import msgpack
import pytest
from harness import HERE, Run, on_each_broker, run, stop, wait_for

from gopherq import State
from gopherq.brokers import Envelope
from gopherq.message import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
__all__ = ["run"]  # the fixture


@on_each_broker
@pytest.mark.parametrize("size", [16_000, 40_000])
def test_a_huge_task_name_does_not_stop_the_worker(run: Run, size: int) -> None:
    worker = run.worker("-c", "1", lease_seconds="60", max_deliveries="3")
    run.wait_ready(worker)
    huge = new_id()  # sent by a foreign producer, as a raw envelope
    body = msgpack.packb({"v": 1, "id": huge, "task": "t" * size, "args": [], "kwargs": {}})
    run.producer.broker.enqueue([Envelope(huge, "default", 2, body)])
    after = run.send("add", 1, 2)
    assert after.get(timeout=30) == 3, run.log()
    wait_for(run.producer.broker.dead_letters, 15, run.log)
    (letter,) = run.producer.broker.dead_letters()
    assert (letter.id, letter.reason) in {(huge, "UNKNOWN_TASK"), (huge, "DECODE_ERROR")}
    assert run.producer.result(huge).state is State.DEAD
    assert worker.poll() is None, run.log()
    assert "process died" not in run.log()
    assert stop(worker) == 0, run.log()


def test_a_store_failing_as_tasks_start_kills_no_process(run: Run) -> None:
    shutil.copy(HERE / "store_fault_app.py", run.path / "tasks.py")
    worker = run.worker("-c", "2", lease_seconds="60", max_deliveries="2")
    results = run.send_batch("nap", [(0.1,)] * 30)
    assert [r.get(timeout=60) for r in results] == [0.1] * 30, run.log()
    log = run.log()
    assert "process died" not in log
    assert run.producer.broker.dead_letters() == []
    assert "could not store its STARTED record" in log  # logged, once per outage
    assert log.count("could not store its STARTED record") <= 2
    assert "the result store works again" in log
    assert stop(worker) == 0, run.log()
