"""``gopherq.once``: a block that an earlier attempt finished is skipped."""

from __future__ import annotations

import pytest

import gopherq
from gopherq import GopherQ, TaskError
from gopherq.worker import Consumer, Exit

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("t", broker="memory://", events="off")


def drain(app: GopherQ) -> None:
    assert Consumer(app, ["default"], burst=True, reserve_timeout=0.1).run() is Exit.DRAINED


def test_a_retried_task_skips_what_an_earlier_attempt_finished(app: GopherQ) -> None:
    charges: list[int] = []
    receipts: list[int] = []

    @app.task(retries=3, retry_delay=0)
    def charge(order: int) -> None:
        with gopherq.once(f"charge:{order}", ttl=60) as needed:
            if needed:
                charges.append(order)
        receipts.append(order)
        if len(receipts) < 3:
            raise ValueError("the receipt service is down")

    result = charge.delay(7)
    drain(app)
    assert result.get(timeout=5) is None
    assert charges == [7]
    assert receipts == [7, 7, 7]
    assert app.backend.marked("charge:7")


def test_a_block_that_raised_runs_again(app: GopherQ) -> None:
    runs: list[int] = []

    @app.task(retries=2, retry_delay=0)
    def flaky() -> None:
        with gopherq.once("flaky-step") as needed:
            if needed:
                runs.append(1)
                if len(runs) == 1:
                    raise ValueError("failed midway")

    flaky.delay()
    drain(app)
    assert runs == [1, 1]
    assert app.backend.marked("flaky-step")


def test_outside_a_task_with_app(app: GopherQ) -> None:
    with gopherq.once("setup", ttl=60, app=app) as needed:
        assert needed
    with gopherq.once("setup", ttl=60, app=app) as needed:
        assert not needed
    with pytest.raises(TaskError, match="app="), gopherq.once("setup"):
        pass


@pytest.mark.parametrize(
    ("key", "ttl"),
    [("", 60), ("x" * 1025, 60), (b"bytes", 60), ("k", 0), ("k", -1), ("k", float("nan")),
     ("k", float("inf")), ("k", "60"), ("k", True)],
)  # fmt: skip
def test_bad_arguments_are_refused_clearly(app: GopherQ, key: object, ttl: object) -> None:
    bad = gopherq.once(key, ttl=ttl, app=app)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="once"), bad:
        pass
    assert not app.backend.marked("k")
