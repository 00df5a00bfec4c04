"""The runner's soft time limit, which only the main thread can arm."""

from __future__ import annotations

import threading
import time

import pytest

from gopherq import GopherQ
from gopherq.errors import SoftTimeLimitExceeded

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
