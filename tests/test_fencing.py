"""Fencing: a worker whose lease ran out never stores its outcome over another's.

A stale worker (its lease renewals stalled) finishes a task after another worker
has run it again and stored SUCCEEDED; the stale outcome (RETRYING, FAILED with
no retries left, or a success of its own after a progress report and a
checkpoint that the fence refuses) is dropped with one warning, the record stays SUCCEEDED
and ``.get()`` returns the value. On every broker, each with its own result
store, and with a result store of another kind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import services

from gopherq import GopherQ, State, TaskError, current_task
from gopherq.brokers import Broker, Delivery, Envelope
from gopherq.brokers.memory import MemoryBroker
from gopherq.brokers.redis import RedisBroker
from gopherq.brokers.sqlite import SQLiteBroker
from gopherq.errors import BrokerUnavailable
from gopherq.results import ResultBackend, open_backend
from gopherq.results.base import JobRecord, Settling
from gopherq.results.memory import MemoryResultBackend
from gopherq.results.redis import RedisResultBackend
from gopherq.runner import Outcome, Runner
from gopherq.worker import Consumer, Exit, Worker
from gopherq.worker.settle import Finished, Settler

pytestmark = pytest.mark.timeout(60)

LEASE = 0.3
LOST = "outcome discarded, may run twice"


def _stall_renewals(broker: Broker) -> None:
    """Make this broker handle's lease renewals do nothing, as if its worker froze."""

    def extend(deliveries: Any) -> int:
        return 0

    broker.extend = extend  # type: ignore[method-assign]


@pytest.fixture(params=["own", "foreign"])
def apps(
    request: pytest.FixtureRequest,
    broker_kind: str,
    make_broker: Callable[..., Broker],
    make_backend: Callable[..., ResultBackend],
    tmp_path: Path,
) -> Iterator[tuple[GopherQ, GopherQ]]:
    """Two workers' apps on one broker and result store: the stale one and the other.

    The store is the broker's own (record and ack in one step, but on memory) or
    another (check, then store).
    """
    stale_broker = make_broker(lease_seconds=LEASE)
    other_broker = make_broker(lease_seconds=LEASE)
    if request.param == "own":
        backend = make_backend()
    elif broker_kind == "memory":
        backend = open_backend(f"sqlite:///{tmp_path / 'results.db'}")
    else:
        backend = MemoryResultBackend()
    yield (
        GopherQ("stale", broker=stale_broker, backend=backend, events="off"),
        GopherQ("other", broker=other_broker, backend=backend, events="off"),
    )
    backend.close()


@pytest.mark.parametrize("ending", ["retrying", "failed", "progress-then-success"])
def test_a_stale_worker_does_not_overwrite_the_result(
    apps: tuple[GopherQ, GopherQ], ending: str, caplog: pytest.LogCaptureFixture
) -> None:
    stale, other = apps
    other_done = threading.Event()

    @stale.task(name="fenced", retries=3 if ending == "retrying" else 0, retry_delay=60)
    def stalls() -> int:
        # Runs past its lease (renewals stalled) until the other worker finished it.
        assert other_done.wait(30)
        if ending == "progress-then-success":
            current_task().progress(1, 1)  # a final report: stored at once, unless fenced
            with pytest.raises(TaskError, match="lost its lease"):
                current_task().checkpoint({"page": 2})
            return 7
        raise ValueError("too late")

    @other.task(name="fenced")
    def succeeds() -> int:
        return 42

    _stall_renewals(stale.broker)
    result = stalls.delay()
    stale_consumer = Consumer(stale, ["default"], reserve_timeout=0.05)
    thread = threading.Thread(target=stale_consumer.run, daemon=True)
    thread.start()
    try:
        _wait_until_leased(stale.broker)
        time.sleep(LEASE * 2)  # the stale worker's lease expires
        consumer = Consumer(other, ["default"], burst=True, reserve_timeout=0.2)
        with caplog.at_level(logging.WARNING, logger="gopherq.worker"):
            assert consumer.run() is Exit.DRAINED
            assert other.backend.get(result.id).state is State.SUCCEEDED  # type: ignore[union-attr]
            other_done.set()
            _wait_for_settle(stale_consumer)
    finally:
        stale_consumer.stop()
        thread.join(10)
    record = other.backend.get(result.id)
    assert record is not None
    assert record.state is State.SUCCEEDED
    assert result.get(timeout=5) == 42
    lost = [r for r in caplog.records if LOST in r.getMessage()]
    assert len(lost) == 1
    assert "fenced" in lost[0].getMessage()
    assert other.broker.stats()["default"].scheduled == 0  # the stale retry was refused


def _wait_until_leased(broker: Broker) -> None:
    deadline = time.monotonic() + 10
    while broker.stats()["default"].running == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _wait_for_settle(consumer: Consumer) -> None:
    """Until the stale consumer flushed its outcome (its runs and pending both done)."""
    deadline = time.monotonic() + 10
    while consumer.tasks_run == 0 or consumer._pending:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_supervisor_settles_a_killed_childs_task_only_while_held(
    apps: tuple[GopherQ, GopherQ], caplog: pytest.LogCaptureFixture
) -> None:
    stale, other = apps

    @stale.task(name="fenced", timeout=1)
    def slow() -> None:
        """Killed by its hard time limit (here: only its settle is exercised)."""

    @other.task(name="fenced")
    def quick() -> int:
        return 42

    result = slow.delay()
    [killed] = stale.broker.reserve(["default"], 1, 0)
    time.sleep(LEASE * 2)  # the killed child's lease expires meanwhile
    assert Consumer(other, ["default"], burst=True, reserve_timeout=0.2).run() is Exit.DRAINED
    outcome = Runner(stale, worker="child").killed(
        killed, task_name="fenced", retries=0, error="killed by its hard time limit"
    )
    assert outcome.action == "dead"
    with caplog.at_level(logging.WARNING, logger="gopherq.worker"):
        Worker(stale, concurrency=1)._settle(killed, "fenced", outcome)
    assert result.get(timeout=5) == 42
    assert stale.broker.dead_letters() == []
    assert sum(LOST in r.getMessage() for r in caplog.records) == 1


def test_the_brokers_own_store_settles_in_one_step(
    broker_kind: str, make_broker: Callable[..., Broker], make_backend: Callable[..., ResultBackend]
) -> None:
    broker, backend = make_broker(), make_backend()
    broker.enqueue([Envelope("x", "default", 2, b"")])
    [delivery] = broker.reserve(["default"], 1, 0)
    held = backend.store_held(broker, [Settling(delivery, None, ack=True)])
    assert held == (None if broker_kind == "memory" else {"x"})
    assert broker.locate("x") is (State.STARTED if broker_kind == "memory" else None)


@pytest.mark.parametrize(
    ("broker_url", "backend_url", "fused"),
    [
        ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/3?prefix=other", True),
        ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/4", False),
        ("redis://127.0.0.1:6379/3", "redis://127.0.0.2:6379/3", False),
        ("redis+cluster://127.0.0.1:7000", "redis+cluster://127.0.0.1:7000", False),
    ],
)
def test_redis_records_and_acks_share_a_script_only_on_one_server(
    broker_url: str, backend_url: str, fused: bool
) -> None:
    """Where a record and its queue live on different servers or cluster slots, the
    worker checks, then stores (nothing connects here: the check reads the URLs)."""
    broker = RedisBroker(broker_url)
    backend = RedisResultBackend(backend_url)
    assert broker.shares_server(backend._conn.config) is fused
    if not fused:
        assert backend.store_held(broker, [Settling(_delivery(), None, ack=True)]) is None


def _delivery() -> Delivery:
    return Delivery("id", "default", 2, b"", 0, 1, "token")


def _retry_fails_once(base: type[Broker]) -> Any:
    class RetryFailsOnce(base):  # type: ignore[valid-type, misc]
        """A broker whose first retry fails, after the acks of its batch went through."""

        failed = False

        def retry(self, delivery: Delivery, countdown: float, error: str) -> bool:
            if not self.failed:
                self.failed = True
                raise BrokerUnavailable("down")
            return bool(super().retry(delivery, countdown, error))

    return RetryFailsOnce


@pytest.mark.parametrize(
    ("broker_kind", "backend_kind"),
    [("memory", "memory"), ("memory", "sqlite"), ("sqlite", "sqlite")],
    ids=["check-then-store", "check-then-store-sqlite", "one-step"],
)
def test_a_settle_repeated_after_a_failure_finishes_without_false_alarms(
    broker_kind: str, backend_kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = f"sqlite:///{tmp_path / 'q.db'}"
    if broker_kind == "sqlite":
        broker = _retry_fails_once(SQLiteBroker)(db)
    else:
        broker = _retry_fails_once(MemoryBroker)()
    url = db if backend_kind == "sqlite" else "memory://"
    _settle_twice(broker, url, caplog)


def test_a_settle_repeated_after_a_failure_on_redis(caplog: pytest.LogCaptureFixture) -> None:
    """One token stands for a whole Redis batch: a repeat must still settle the
    deliveries of that batch the failed attempt did not."""
    url = services.redis_test_url()
    broker = _retry_fails_once(RedisBroker)(url)
    try:
        _settle_twice(broker, url, caplog)
    finally:
        broker.close()
        services.delete_keys(url)


def _settle_twice(broker: Broker, url: str, caplog: pytest.LogCaptureFixture) -> None:
    app = GopherQ("t", broker=broker, backend=url, events="off")
    broker.enqueue([Envelope("done", "default", 2, b""), Envelope("again", "default", 2, b"")])
    done, again = broker.reserve(["default"], 2, 0)
    finished = [
        Finished(done, "t", Outcome("ack", JobRecord("done", "t", State.SUCCEEDED))),
        Finished(
            again, "t", Outcome("retry", JobRecord("again", "t", State.RETRYING), countdown=1e9)
        ),
    ]
    settler = Settler(app, "w")
    with caplog.at_level(logging.WARNING, logger="gopherq.worker"):
        with pytest.raises(BrokerUnavailable):
            settler.settle(finished)
        assert broker.locate("done") is None  # acked before the retry failed
        settler.settle(finished)  # the consumer repeats the whole batch
    assert broker.locate("again") is State.SCHEDULED
    assert app.backend.get("done").state is State.SUCCEEDED  # type: ignore[union-attr]
    assert app.backend.get("again").state is State.RETRYING  # type: ignore[union-attr]
    assert not [r for r in caplog.records if LOST in r.getMessage()]
