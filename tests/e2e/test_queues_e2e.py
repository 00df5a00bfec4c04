"""Queue weights, strict order and priority aging with real worker processes, on SQLite
and on Redis: ``gopherq worker -Q high:3,default:2,low:1``, ``--strict``, and the
setting ``priority_aging`` under a flood of critical tasks."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from harness import Run, on_each_broker, run, wait_for

from gopherq.brokers import Envelope
from gopherq.message import Message, new_id

__all__ = ["run"]

pytestmark = [on_each_broker, pytest.mark.timeout(300)]

WEIGHTS = {"high": 3, "default": 2, "low": 1}
MEASURED = 6000
"""Tasks over which the shares are measured: the first to start."""


def send(
    run: Run, queue: str, count: int, task: str = "mark", *args: object, priority: int = 2
) -> None:
    """Send ``count`` tasks to ``queue`` in one broker call (``mark`` notes the queue)."""
    messages = [
        Message(
            id=new_id(),
            task=f"tasks.{task}",
            args=list(args or (queue,)),
            queue=queue,
            priority=priority,
        )
        for _ in range(count)
    ]
    codec = run.producer.codec
    run.producer.broker.enqueue(
        [Envelope(m.id, m.queue, m.priority, codec.encode(m)) for m in messages]
    )


def marks(run: Run) -> list[str]:
    """The labels of the ``mark`` tasks, in the order they ran."""
    return [event[3] for event in run.events("mark")]


def test_weights_share_the_tasks_3_2_1(run: Run) -> None:
    for queue in WEIGHTS:  # more than each share, so that every queue has work throughout
        send(run, queue, 4000)
    worker = run.worker("-Q", "high:3,default:2,low:1", "-c", "2", "--burst", "-l", "warning")
    assert worker.wait(240) == 0, run.log()
    ran = marks(run)
    assert len(ran) == 12_000
    shares = Counter(ran[:MEASURED])
    total = sum(WEIGHTS.values())
    for queue, weight in WEIGHTS.items():
        expected = MEASURED * weight / total
        assert abs(shares[queue] - expected) <= 0.05 * expected, shares
    print(f"first {MEASURED}: {dict(shares)}")


def test_strict_takes_the_first_queue_first(run: Run) -> None:
    send(run, "low", 50)  # first in line, and of the same priority
    send(run, "high", 50)
    worker = run.worker("-Q", "high,low", "--strict", "-c", "1", "--burst", "-l", "warning")
    assert worker.wait(60) == 0, run.log()
    assert marks(run) == ["high"] * 50 + ["low"] * 50


def test_priority_aging_moves_a_bulk_task_through_a_flood(run: Run) -> None:
    """A flood of priority-0 tasks, more than the worker keeps up with; a priority-4 task
    sent into it starts once it waited 4 aging periods, while the flood goes on."""
    period = 0.5
    flooding = threading.Event()
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            send(run, "default", 3, "nap", 0.01, "flood", priority=0)  # 150/s, 100/s run
            flooding.set()
            time.sleep(0.02)

    worker = run.worker("-c", "1", priority_aging=str(period))
    run.wait_ready(worker)
    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        flooding.wait(10)
        time.sleep(0.2)  # a backlog builds up
        sent = time.time()
        send(run, "default", 1, "mark", "bulk", priority=4)
        wait_for(lambda: "bulk" in marks(run), 30, run.log)
        started = run.events("mark")[0][0]
        wait_for(lambda: run.events("start")[-1][0] > started, 10, run.log)  # flood goes on
    finally:
        stop.set()
        flooder.join()
    waited = started - sent
    print(f"priority 4 started after {waited:.2f}s = {waited / period:.2f} periods of {period}s")
    assert 4 * period <= waited + 0.01
    assert waited <= 4.5 * period


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["-Q", "high:0,low"], "queue 'high:0': expected NAME or NAME:WEIGHT with a whole number"),
        (["-Q", "high:x"], "queue 'high:x': expected NAME or NAME:WEIGHT"),
        (["-Q", "high:-1"], "queue 'high:-1': expected NAME or NAME:WEIGHT"),
        (["-Q", "a:2,b", "--strict"], "-Q a:2,b:1 with --strict: strict order takes the queues"),
    ],
)
def test_bad_queue_options_stop_before_any_process_starts(
    run: Run, args: list[str], error: str
) -> None:
    worker = run.worker(*args)
    assert worker.wait(30) == 1
    (line,) = run.log().strip().splitlines()
    assert line.startswith(f"Error: {error}"), line
