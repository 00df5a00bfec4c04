"""Worker metrics: the shared-memory counter blocks, the middleware that fills them, the
exposition read with prometheus-client's parser, and the HTTP probes."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gopherq import GopherQ
from gopherq.brokers import Delivery
from gopherq.context import TaskContext
from gopherq.errors import BrokerUnavailable
from gopherq.message import Message, new_id
from gopherq.observability import counters, server
from gopherq.observability.counters import ACK, RETRY, UNKNOWN, CounterTable, dead_column
from gopherq.observability.endpoint import LIVE_STALE, WorkerEndpoint
from gopherq.observability.metrics import TaskMetrics, WorkerMetrics, WorkerView
from gopherq.observability.server import BrokerCheck, MetricsServer
from gopherq.runner import Outcome
from gopherq.states import DeadReason
from gopherq.worker import Worker
from gopherq.worker.consumer import Exit
from gopherq.worker.slots import Running, Slot
from gopherq.worker.supervisor import _Child, _Kill, _restart_cause

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def counts(table: CounterTable) -> dict[tuple[str, str], list[float]]:
    return {table.label(key): row for key, row in table.totals().items()}


def test_blocks_sum_and_unknown_names_share_one_row() -> None:
    table = CounterTable(["t.a", "t.b"], ["q1", "q2"], blocks=3)
    one, two = table.writer(0), table.writer(1)
    one.count("t.a", "q1", ACK, 0.2, None)
    two.count("t.a", "q1", ACK, 0.4, 1.0)
    two.count("t.b", "q2", RETRY, None, None)
    for i in range(100):  # hostile names: one row, not a hundred
        one.count(f"evil-{i}", f"queue-{i}", dead_column(DeadReason.UNKNOWN_TASK), None, None)
    rows = counts(table)
    assert set(rows) == {("t.a", "q1"), ("t.b", "q2"), (UNKNOWN, UNKNOWN)}
    assert rows["t.a", "q1"][ACK] == 2
    assert rows["t.a", "q1"][counters.DURATION_SUM] == pytest.approx(0.6)
    assert rows["t.a", "q1"][counters.WAIT_SUM] == 1.0
    assert rows["t.b", "q2"][RETRY] == 1
    assert rows[UNKNOWN, UNKNOWN][dead_column(DeadReason.UNKNOWN_TASK)] == 100


def test_a_duration_lands_in_the_first_bucket_that_holds_it() -> None:
    table = CounterTable(["t"], ["q"], blocks=1)
    writer = table.writer(0)
    for seconds in (0.001, 0.0011, 601.0):
        writer.count("t", "q", ACK, seconds, None)
    row = counts(table)["t", "q"]
    buckets = row[counters.DURATION : counters.DURATION_SUM]
    assert buckets[0] == 1  # le=0.001 holds 0.001 itself
    assert buckets[1] == 1
    assert buckets[-1] == 1  # above every bound: +Inf only
    assert sum(buckets) == 3


def test_fold_keeps_the_counts_of_an_exited_process_and_frees_its_block() -> None:
    table = CounterTable(["t"], ["q"], blocks=2)
    table.writer(1).count("t", "q", ACK, None, None)  # a process that lives on
    for generation in range(1, 50):  # processes replaced over and over in block 0
        table.writer(0).count("t", "q", ACK, None, None)
        assert counts(table)["t", "q"][ACK] == generation + 1
        table.fold(0)
        assert counts(table)["t", "q"][ACK] == generation + 1
        assert table._cells[0] == 0  # the block is empty for the next process


def test_a_forked_process_counts_into_the_parents_view() -> None:
    table = CounterTable(["t"], ["q"], blocks=2)
    pid = os.fork()
    if pid == 0:
        writer = table.writer(1)
        for _ in range(7):
            writer.count("t", "q", ACK, 0.01, None)
        os._exit(0)
    os.waitpid(pid, 0)
    assert counts(table)["t", "q"][ACK] == 7
    table.fold(1)
    assert counts(table)["t", "q"][ACK] == 7


def test_a_full_block_counts_new_pairs_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters, "MAX_ROWS", 3)
    table = CounterTable(["a", "b", "c"], ["q"], blocks=1)
    writer = table.writer(0)
    for task in ("a", "b", "c", "a"):
        writer.count(task, "q", ACK, None, None)
    rows = counts(table)
    assert rows["a", "q"][ACK] == 2
    assert rows["b", "q"][ACK] == 1
    assert rows[UNKNOWN, UNKNOWN][ACK] == 1  # "c": past the rows a block holds
    assert len(rows) == 3


def context(message: Message, attempt: int = 0) -> TaskContext:
    return TaskContext(message.id, message.task, message.queue, attempt, 3)


def outcome(action: str, reason: DeadReason | None = None) -> Outcome:
    return Outcome(action, None, reason=reason)  # type: ignore[arg-type]


def test_the_middleware_counts_only_once_attached() -> None:
    app = GopherQ("m", broker="memory://")
    table = CounterTable(["t"], ["default"], blocks=2)
    metrics = TaskMetrics(table)
    message = Message(new_id(), "t", created=time.time() - 5)
    metrics.after_execute(app, message, context(message), outcome("ack"), 0.5)
    assert counts(table) == {}
    metrics.attach(0)
    metrics.after_execute(app, message, context(message), outcome("ack"), 0.5)
    metrics.after_execute(app, message, context(message, attempt=1), outcome("retry"), 0.5)
    metrics.after_execute(app, message, context(message), outcome("cancel"), 0.0)
    for reason in (DeadReason.MAX_RETRIES, DeadReason.EXPIRED, DeadReason.BAD_ARGS):
        metrics.after_execute(app, message, context(message), outcome("dead", reason), 0.1)
    metrics.detach()
    metrics.after_execute(app, message, context(message), outcome("ack"), 0.5)
    row = counts(table)["t", "default"]
    assert row[ACK] == 1 and row[RETRY] == 1 and row[counters.CANCEL] == 1
    # Durations of runs that ran the task to an end: ack, retry, failed.
    assert sum(row[counters.DURATION : counters.DURATION_SUM]) == 3
    # Queue waits of first attempts among those: ack and failed; about 5 s each.
    assert sum(row[counters.WAIT : counters.WAIT_SUM]) == 2
    assert 9.0 < row[counters.WAIT_SUM] < 60.0
    # The supervisor's block (tasks of killed processes): counts, no durations.
    metrics.attach(1, timed=False)
    metrics.after_execute(app, message, context(message), outcome("dead", DeadReason.TIME_LIMIT), 0)
    row = counts(table)["t", "default"]
    assert row[dead_column(DeadReason.TIME_LIMIT)] == 1
    assert sum(row[counters.DURATION : counters.DURATION_SUM]) == 3


def test_queue_wait_counts_from_the_eta() -> None:
    app = GopherQ("m", broker="memory://")
    table = CounterTable(["t"], ["default"], blocks=1)
    metrics = TaskMetrics(table)
    metrics.attach(0)
    now = time.time()
    message = Message(new_id(), "t", created=now - 3600, eta=now + 3600)  # started early: 0
    metrics.after_execute(app, message, context(message), outcome("ack"), 0.0)
    row = counts(table)["t", "default"]
    assert row[counters.WAIT] == 1 and row[counters.WAIT_SUM] == 0.0


def scrape(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exposition(metrics: WorkerMetrics, view: WorkerView) -> Samples:
    from prometheus_client.exposition import generate_latest

    return scrape(generate_latest(metrics.registry(lambda: view)).decode())


def test_the_exposition_splits_dead_letters_into_outcomes() -> None:
    app = GopherQ("m", broker="memory://")

    @app.task(name="t")
    def t() -> None: ...

    metrics = WorkerMetrics(app, ["default", "other"], concurrency=1)
    metrics.middleware.attach(0)
    message = Message(new_id(), "t")
    for reason, times in (
        (DeadReason.MAX_RETRIES, 2),
        (DeadReason.TIME_LIMIT, 1),
        (DeadReason.EXPIRED, 3),
        (DeadReason.REJECTED, 4),
        (DeadReason.WORKER_LOST, 5),
    ):
        for _ in range(times):
            metrics.middleware.after_execute(
                app, message, context(message), outcome("dead", reason), 0.01
            )
    metrics.exited(0, "died")
    assert metrics.table._cells[0] == 0  # folded: the block is free for the replacement
    metrics.exited(0, "recycled")
    metrics.exited(0, None)
    samples = exposition(metrics, WorkerView(children=1, running={"other": 1}))

    def task_count(outcome: str) -> float:
        labels = frozenset({"task": "t", "queue": "default", "outcome": outcome}.items())
        return samples[("gopherq_tasks_total", labels)]

    assert [task_count(o) for o in ("failed", "expired", "dead", "succeeded")] == [3, 3, 9, 0]
    letters = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples.items()
        if name == "gopherq_dead_letters_total" and v
    }
    assert letters == {
        "MAX_RETRIES": 2,
        "TIME_LIMIT": 1,
        "EXPIRED": 3,
        "REJECTED": 4,
        "WORKER_LOST": 5,
    }
    histogram = "gopherq_task_duration_seconds"
    key = frozenset({"task": "t", "queue": "default"}.items())
    assert samples[(f"{histogram}_count", key)] == 6  # MAX_RETRIES and REJECTED ran
    assert samples[(f"{histogram}_bucket", key | {("le", "0.01")})] == 6
    assert samples[(f"{histogram}_bucket", key | {("le", "0.005")})] == 0
    assert samples[("gopherq_tasks_in_progress", frozenset({("queue", "other")}))] == 1
    assert samples[("gopherq_tasks_in_progress", frozenset({("queue", "default")}))] == 0
    assert samples[("gopherq_worker_children", frozenset())] == 1
    restarts = "gopherq_worker_child_restarts_total"
    assert samples[(restarts, frozenset({("cause", "died")}))] == 1
    assert samples[(restarts, frozenset({("cause", "recycled")}))] == 1
    assert samples[(restarts, frozenset({("cause", "time_limit")}))] == 0


def test_restart_causes() -> None:
    running = Running(Delivery("id", "q", 2, b"", 0, 1, "tok"), "t", None, 1.0, 0.0)
    child = _Child(0, 123, 0.0)
    assert _restart_cause(child, -9) == "died"
    assert _restart_cause(child, Exit.RECYCLE) == "recycled"
    child.kill = _Kill(running, cancelled=False)
    assert _restart_cause(child, -9) == "time_limit"
    child.kill = _Kill(running, cancelled=True)
    assert _restart_cause(child, -9) == "cancelled"


@pytest.fixture
def endpoint() -> Iterator[tuple[str, dict[str, str | None]]]:
    app = GopherQ("m", broker="memory://")
    metrics = WorkerMetrics(app, ["default"], concurrency=1)
    checks: dict[str, str | None] = {"live": None, "ready": None}
    http = MetricsServer(
        "127.0.0.1",
        0,
        metrics.registry(lambda: WorkerView(children=1)),
        lambda: checks["live"],
        lambda: checks["ready"],
    )
    http.start()
    try:
        yield f"http://127.0.0.1:{http.port}", checks
    finally:
        http.close()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_endpoints(endpoint: tuple[str, dict[str, str | None]]) -> None:
    base, checks = endpoint
    status, kind, text = get(f"{base}/metrics")
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    assert ("gopherq_worker_children", frozenset()) in scrape(text)
    assert get(f"{base}/live")[::2] == (200, "ok\n")
    assert get(f"{base}/ready?verbose")[::2] == (200, "ok\n")
    checks["ready"] = "the broker does not answer: refused"
    checks["live"] = "the supervisor loop has not run for 31s"
    assert get(f"{base}/ready")[::2] == (503, "the broker does not answer: refused\n")
    assert get(f"{base}/live")[::2] == (503, "the supervisor loop has not run for 31s\n")
    assert get(f"{base}/other")[0] == 404


def test_a_port_in_use_raises(endpoint: tuple[str, dict[str, str | None]]) -> None:
    port = int(endpoint[0].rsplit(":", 1)[1])
    with pytest.raises(OSError, match="in use"):
        MetricsServer("127.0.0.1", port, None, lambda: None, lambda: None)  # type: ignore[arg-type]


def test_the_broker_check_pings_at_most_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    pings: list[float] = []
    failing = [False]

    def ping() -> None:
        pings.append(clock[0])
        if failing[0]:
            raise ConnectionError("refused by redis://:secret@host")

    check = BrokerCheck(SimpleNamespace(ping=ping))
    assert check() is None
    failing[0] = True
    assert check() is None  # the cached answer
    clock[0] += server.PING_EVERY
    error = check()
    assert error is not None and error.startswith("the broker does not answer: refused")
    assert "secret" not in error
    assert len(pings) == 2


def test_the_workers_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor's endpoint, without forking: slots, stopping, the broker, the loop."""
    monkeypatch.setattr(server, "PING_EVERY", 0.0)  # every probe pings
    app = GopherQ("m", broker=f"sqlite:///{tmp_path / 'q.db'}")
    worker = Worker(app, concurrency=2, metrics_port=0)
    worker._slots = Slot.allocate(2, 1)
    assert worker._can_start()
    endpoint = worker._endpoint
    assert endpoint is not None
    base = endpoint.url.removesuffix("/metrics")
    try:
        assert get(f"{base}/ready")[::2] == (503, "2 of 2 processes are not running\n")
        for index in range(2):
            worker._children[1000 + index] = _Child(index, 1000 + index, 0.0)
        assert get(f"{base}/ready")[::2] == (200, "ok\n")
        assert get(f"{base}/live")[::2] == (200, "ok\n")  # not looping yet: starting
        worker._tick = time.monotonic() - LIVE_STALE - 1
        status, _, text = get(f"{base}/live")
        assert status == 503 and text.startswith("the supervisor loop has not run for 3")
        worker._signals = 1
        assert get(f"{base}/ready")[::2] == (503, "the worker is stopping\n")
        worker._signals = 0

        def down() -> None:
            raise BrokerUnavailable("SQLite broker: disk I/O error")

        monkeypatch.setattr(endpoint._probe, "ping", down)
        status, _, text = get(f"{base}/ready")
        assert status == 503
        assert text == "the broker does not answer: SQLite broker: disk I/O error\n"
        assert endpoint.metrics.middleware in list(app.middleware)
    finally:
        worker._close_endpoint()
    assert not any(isinstance(m, TaskMetrics) for m in app.middleware)
    app.close()


def test_an_ipv6_endpoint(tmp_path: Path) -> None:
    app = GopherQ("m", broker=f"sqlite:///{tmp_path / 'q.db'}")
    try:
        endpoint = WorkerEndpoint(
            app, ["default"], 1, host="::1", port=0, view=lambda: WorkerView(children=1)
        )
    except OSError as exc:  # no IPv6 loopback here
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        assert endpoint.url.startswith("http://[::1]:")
        assert get(endpoint.url)[0] == 200
    finally:
        endpoint.close()
        app.close()
