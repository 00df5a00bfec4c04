"""Rate limits with real worker processes, on SQLite and on Redis: the observed rate,
an unlimited task not blocked by a limited one, a limit changed at run time with the
CLI, and ``RateLimited`` rescheduling without a retry. Times are loose: the machine
may be busy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from harness import HERE, Run, on_each_broker, run, wait_for

from gopherq import State

pytestmark = [on_each_broker, pytest.mark.timeout(120)]
__all__ = ["run"]  # the fixture


@pytest.fixture(autouse=True)
def _rate_app(run: Run) -> None:
    shutil.copy(HERE / "app_module.py", run.path / "app_module.py")
    shutil.copy(HERE / "rate_app.py", run.path / "tasks.py")


def rate_limit(run: Run, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``gopherq -A tasks rate-limit *args`` in ``run``'s directory, on its broker."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    environ["GOPHERQ_BROKER_URL"] = run.url
    command = [sys.executable, "-m", "gopherq", "-A", "tasks", "rate-limit", *args]
    return subprocess.run(command, check=False, cwd=run.path, env=environ, capture_output=True)


def test_a_limited_task_runs_at_its_rate_across_workers(run: Run) -> None:
    run.wait_ready(run.worker("-c", "2"))
    run.wait_ready(run.worker("-c", "2"))
    results = run.send_batch("limited", [(i,) for i in range(40)])
    wait_for(lambda: len(run.events("limited")) == 40, 30, run.log)
    starts = sorted(event[0] for event in run.events("limited"))
    # 20/s with a burst of 1: 39 intervals of 50 ms after the first (which may
    # start late, its worker just up).
    assert 1.8 <= starts[-1] - starts[0] < 3.0
    assert {event[4] for event in run.events("limited")} == {0}  # no retry used
    assert all(r.state is State.SUCCEEDED for r in results)


def test_two_buckets_each_run_at_their_rate(run: Run) -> None:
    # tasks.shared: 15/s for the task, 10/s per tenant. Two tenants with a backlog
    # each: the task's bucket holds both to 15/s together, each tenant's to 10/s.
    run.wait_ready(run.worker("-c", "2"))
    run.wait_ready(run.worker("-c", "2"))
    for i in range(30):
        run.send("shared", i, "a", fair_key="a")
        run.send("shared", i, "b", fair_key="b")
    wait_for(lambda: len(run.events("shared")) == 60, 30, run.log)
    starts = sorted(event[0] for event in run.events("shared"))
    # 59 intervals of 1/15 s after the first: 3.93 s (a busy machine: later, not sooner).
    assert 3.6 <= starts[-1] - starts[0] < 4.6
    for tenant in "ab":
        mine = sorted(event[0] for event in run.events("shared") if event[4] == tenant)
        # At most 10/s: no 11 starts of one tenant within one second.
        assert all(b - a >= 0.9 for a, b in zip(mine, mine[10:], strict=False))


def test_an_unlimited_task_is_not_blocked_by_a_limited_one(run: Run) -> None:
    run.wait_ready(run.worker("-c", "2"))
    run.send_batch("throttled", [(i,) for i in range(20)])  # 1/m: one runs, 19 wait
    run.send_batch("free", [(i,) for i in range(50)])

    def done() -> bool:  # the admitted one may run after the free ones, in the other process
        return len(run.events("free")) == 50 and len(run.events("throttled")) >= 1

    wait_for(done, 20, run.log)
    assert len(run.events("throttled")) == 1
    scheduled = run.producer.broker.stats()["default"].scheduled
    assert scheduled == 19


def test_a_limit_changed_at_run_time_is_honoured(run: Run) -> None:
    run.wait_ready(run.worker("-c", "2"))
    run.send_batch("throttled", [(i,) for i in range(10)])
    wait_for(lambda: run.producer.broker.stats()["default"].scheduled == 9, 20, run.log)
    done = rate_limit(run, "set", "tasks.throttled", "100/s")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"tasks.throttled: 100/s (burst 1)\n"
    # The messages waiting for a slot of 1/m are released and run at once.
    wait_for(lambda: len(run.events("throttled")) == 10, 10, run.log)
    unknown = rate_limit(run, "set", "tasks.nope", "1/s")
    assert unknown.returncode == 1
    assert unknown.stderr.decode().strip().splitlines() == [
        "Error: no task named 'tasks.nope' is registered in e2e-rates"
    ]


def test_rate_limited_reschedules_without_using_a_retry(run: Run) -> None:
    run.wait_ready(run.worker("-c", "2"))
    results = [run.send("partner", i) for i in range(3)]
    assert [r.get(timeout=20) for r in results] == ["done 0", "done 1", "done 2"]
    assert len(run.events("partner-429")) == 3
    assert {event[4] for event in run.events("partner")} == {0}  # attempt 0: no retry used
    for result in results:
        record = run.producer.backend.get(result.id)
        assert record is not None and record.attempts == 1
