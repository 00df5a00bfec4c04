"""The runner: its soft time limit (which only the main thread can arm), and the
countdown of a retry."""

from __future__ import annotations

import math
import threading
import time

import pytest

from gopherq import GopherQ, current_task
from gopherq.brokers import Delivery
from gopherq.errors import SoftTimeLimitExceeded
from gopherq.message import Message, new_id
from gopherq.runner import Runner

pytestmark = pytest.mark.timeout(30)


def test_soft_time_limit_raises_in_the_task() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGALRM is only delivered to the main thread")
    app = GopherQ("t", eager=True)

    @app.task(soft_timeout=0.05)
    def slow() -> str:
        try:
            time.sleep(5)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "slept"

    started = time.monotonic()
    assert slow.delay().get(timeout=5) == "cleaned up"
    assert time.monotonic() - started < 2


def test_no_soft_time_limit_outside_the_main_thread() -> None:
    app = GopherQ("t", eager=True)

    @app.task(soft_timeout=0.05)
    def slow() -> str:
        time.sleep(0.2)
        return "slept"

    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(slow.delay().get(timeout=5)))
    thread.start()
    thread.join(10)
    assert results == ["slept"]


@pytest.mark.parametrize("requested", [None, 7.5, float("nan"), float("inf")])
def test_a_retry_carries_a_countdown_not_a_time(requested: float | None) -> None:
    app = GopherQ("t", broker="memory://")

    @app.task(retries=1, retry_delay=2.5, jitter=False)
    def fails() -> None:
        raise current_task().retry(countdown=requested)

    delivery = Delivery(new_id(), "default", 2, b"", 0, 1, "t")
    message = Message(id=delivery.id, task=fails.name)
    outcome = Runner(app).run(delivery, message)
    expected = requested if requested is not None and math.isfinite(requested) else 2.5
    assert (outcome.action, outcome.countdown) == ("retry", expected)


def test_a_task_killed_by_its_time_limit_retries_after_its_delay() -> None:
    app = GopherQ("t", broker="memory://")

    @app.task(retries=1, retry_delay=2.5, jitter=False, timeout=1)
    def slow() -> None:
        pass

    delivery = Delivery(new_id(), "default", 2, b"", 0, 1, "t")
    outcome = Runner(app).killed(delivery, task_name=slow.name, retries=None, error="killed")
    assert (outcome.action, outcome.countdown) == ("retry", 2.5)
