"""Retry policy: backoff shapes, caps, jitter, which exceptions retry."""

from __future__ import annotations

import datetime as dt

import pytest

from gopherq.task import TaskOptions


def options(**values: object) -> TaskOptions:
    return TaskOptions(name="t", **values)  # type: ignore[arg-type]


def test_exponential_linear_fixed_without_jitter() -> None:
    exp = options(backoff="exponential", retry_delay=2.0, max_retry_delay=100.0, jitter=False)
    assert [exp.retry_delay_for(a) for a in range(7)] == [2, 4, 8, 16, 32, 64, 100]
    lin = options(backoff="linear", retry_delay=3.0, jitter=False)
    assert [lin.retry_delay_for(a) for a in range(3)] == [3, 6, 9]
    fixed = options(backoff="fixed", retry_delay=5.0, jitter=False)
    assert {fixed.retry_delay_for(a) for a in range(5)} == {5}


def test_huge_attempt_stays_capped() -> None:
    assert options(jitter=False, max_retry_delay=60.0).retry_delay_for(10_000) == 60.0


def test_full_jitter_stays_within_bounds() -> None:
    policy = options(retry_delay=1.0, max_retry_delay=10.0)
    delays = [policy.retry_delay_for(3) for _ in range(500)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # spread, not constant


def test_autoretry_selection() -> None:
    policy = options(autoretry_for=(OSError,), dont_autoretry_for=(FileNotFoundError,))
    assert policy.should_retry(ConnectionError())
    assert not policy.should_retry(FileNotFoundError())
    assert not policy.should_retry(ValueError())


@pytest.mark.parametrize("expires", [30, 30.0, dt.timedelta(seconds=30)])
def test_expires_accepts_seconds_and_timedelta(expires: object) -> None:
    from gopherq import GopherQ

    app = GopherQ("x", broker="memory://")
    task = app.task(expires=expires)(lambda: None)
    assert task.options.expires == 30.0
