"""End to end: a real ``-c 2`` worker's /metrics, read with prometheus-client's parser,
counts a known workload exactly, across a child SIGKILLed mid-task; /live, /ready;
a metrics port in use."""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import services
from harness import Run, on_each_broker, run, stop, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
__all__ = ["run"]  # the fixture

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_url(run: Run) -> str:
    wait_for(lambda: "metrics on http://" in run.log(), 15, run.log)
    found = re.search(r"metrics on (http://\S+)/metrics", run.log())
    assert found, run.log()
    return found.group(1)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base: str) -> Samples:
    """Every sample of the exposition, by name and labels, as the official parser reads it."""
    status, text = get(f"{base}/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def tasks(samples: Samples, task: str) -> dict[str, float]:
    """The non-zero outcomes of ``task`` on the default queue."""
    counts = {}
    for outcome in ("succeeded", "failed", "retried", "dead", "cancelled", "expired"):
        count = value(samples, "gopherq_tasks_total", task=task, queue="default", outcome=outcome)
        if count:
            counts[outcome] = count
    return counts


@on_each_broker
def test_exact_counts_across_a_killed_process(run: Run) -> None:
    worker = run.worker("-c", "2", "--metrics-port", "0", lease_seconds="60")
    base = metrics_url(run)
    run.wait_ready(worker)
    # Two long tasks at once: each process runs one (a long task is reserved alone).
    first = [run.send("nap", 0.5, label) for label in ("a", "b")]
    assert [r.get(timeout=30) for r in first] == ["a", "b"], run.log()
    ran_naps = {pid for _, pid, _, label in run.events("start")}
    results = [run.send("add", i, 1) for i in range(5)]
    for name in ("fails", "flaky", "rejects", "nope"):
        run.send(name)
    assert [r.get(timeout=30) for r in results] == [1, 2, 3, 4, 5], run.log()
    wait_for(lambda: len(run.producer.broker.dead_letters()) == 4, 30, run.log)
    before = scrape(base)
    assert tasks(before, "tasks.add") == {"succeeded": 5}

    long = run.send("nap", 3, "long")
    wait_for(lambda: any(e[3] == "long" for e in run.events("start")), 30, run.log)
    (pid,) = [e[1] for e in run.events("start") if e[3] == "long"]
    assert pid in ran_naps  # so the killed process had counts of its own
    os.kill(pid, signal.SIGKILL)
    assert long.get(timeout=60) == "long", run.log()  # run again by another process

    def restarted() -> bool:
        after = scrape(base)
        return value(after, "gopherq_worker_child_restarts_total", cause="died") == 1

    wait_for(restarted, 30, run.log)
    after = scrape(base)
    assert tasks(after, "tasks.nap") == {"succeeded": 3}  # a, b and long's second run
    assert tasks(after, "tasks.add") == {"succeeded": 5}
    assert tasks(after, "tasks.fails") == {"failed": 1}
    assert tasks(after, "tasks.flaky") == {"retried": 3, "failed": 1}
    assert tasks(after, "tasks.rejects") == {"dead": 1}
    assert tasks(after, "unknown") == {"dead": 1}  # tasks.nope is not registered
    assert not any("tasks.nope" in str(labels) for _, labels in after)
    for reason, count in (("MAX_RETRIES", 2), ("REJECTED", 1), ("UNKNOWN_TASK", 1)):
        letters = value(after, "gopherq_dead_letters_total", queue="default", reason=reason)
        assert letters == count, reason
    duration = "gopherq_task_duration_seconds_count"
    assert value(after, duration, task="tasks.add", queue="default") == 5
    assert value(after, duration, task="tasks.flaky", queue="default") == 4
    assert value(after, duration, task="unknown", queue="default") == 0  # it never ran
    # First attempts that ran: 3 naps, 5 adds, fails, flaky, rejects.
    assert value(after, "gopherq_task_queue_wait_seconds_count", queue="default") == 11
    assert value(after, "gopherq_tasks_in_progress", queue="default") == 0
    assert value(after, "gopherq_worker_children") == 2
    for cause in ("recycled", "time_limit", "cancelled"):
        assert value(after, "gopherq_worker_child_restarts_total", cause=cause) == 0
    assert value(after, "process_cpu_seconds_total") > 0  # the supervisor's own
    assert not any(name.startswith("gopherq_") and "pid" in dict(labels) for name, labels in after)
    assert get(f"{base}/live") == (200, "ok\n")
    assert get(f"{base}/ready") == (200, "ok\n")
    assert stop(worker) == 0, run.log()


def test_time_limits_and_recycling_are_counted(run: Run) -> None:
    worker = run.worker("-c", "2", "--metrics-port", "0", "--max-tasks-per-child", "3")
    base = metrics_url(run)
    run.wait_ready(worker)
    hang = run.send("hang")  # killed twice by its 0.5 s limit: retried, then failed
    results = [run.send("add", i, 1) for i in range(7)]
    assert [r.get(timeout=60) for r in results] == list(range(1, 8)), run.log()
    wait_for(run.producer.broker.dead_letters, 60, run.log)
    assert hang.state.value == "FAILED"

    def settled() -> bool:
        samples = scrape(base)
        restarts = "gopherq_worker_child_restarts_total"
        return (
            value(samples, restarts, cause="time_limit") == 2
            and value(samples, "gopherq_worker_children") == 2
        )

    wait_for(settled, 30, run.log)
    samples = scrape(base)
    assert tasks(samples, "tasks.hang") == {"retried": 1, "failed": 1}  # by the supervisor
    assert tasks(samples, "tasks.add") == {"succeeded": 7}
    letters = value(samples, "gopherq_dead_letters_total", queue="default", reason="TIME_LIMIT")
    assert letters == 1
    duration = "gopherq_task_duration_seconds_count"
    assert value(samples, duration, task="tasks.hang", queue="default") == 0  # unknown
    recycled = value(samples, "gopherq_worker_child_restarts_total", cause="recycled")
    assert recycled >= 2  # 7 tasks, at most 3 per process
    assert value(samples, "gopherq_worker_child_restarts_total", cause="died") == 0
    assert stop(worker) == 0, run.log()


def test_in_progress_and_not_ready_while_stopping(run: Run) -> None:
    worker = run.worker("-c", "1", "--metrics-port", "0", lease_seconds="60")
    base = metrics_url(run)
    run.wait_ready(worker)
    run.send("nap", 30, "long")
    wait_for(lambda: run.events("start"), 30, run.log)
    assert value(scrape(base), "gopherq_tasks_in_progress", queue="default") == 1
    assert get(f"{base}/ready") == (200, "ok\n")
    worker.send_signal(signal.SIGTERM)  # stopping: not ready while the task finishes
    wait_for(lambda: get(f"{base}/ready")[0] == 503, 15, run.log)
    status, text = get(f"{base}/ready")
    assert (status, text) == (503, "the worker is stopping\n")
    assert get(f"{base}/live") == (200, "ok\n")


def test_a_metrics_port_in_use(run: Run) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = run.worker("-c", "2", "--metrics-port", str(port))
        assert worker.wait(30) == 1, run.log()
    log = run.log()
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, log
    assert errors[0].endswith(
        f"cannot start: cannot serve metrics on 127.0.0.1:{port}: the port is in use"
    )
    assert " ready: " not in log and "process started" not in log


def test_not_ready_while_the_broker_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/ready`` answers 503 while the worker's Redis is gone, 200 once it is back;
    ``/live`` stays 200 (the supervisor loop runs on)."""
    for name in list(os.environ):
        if name.startswith("GOPHERQ_"):
            monkeypatch.delenv(name)
    server = services.RedisServer(tmp_path / "redis").start()
    run = Run(tmp_path, services.with_prefix(server.url))
    try:
        worker = run.worker("-c", "1", "--metrics-port", "0")
        base = metrics_url(run)
        run.wait_ready(worker)
        assert get(f"{base}/ready") == (200, "ok\n")
        server.stop()
        wait_for(lambda: get(f"{base}/ready")[0] == 503, 30, run.log)
        assert get(f"{base}/ready")[1].startswith("the broker does not answer")
        assert get(f"{base}/live") == (200, "ok\n")
        server.start()  # the same port
        wait_for(lambda: get(f"{base}/ready")[0] == 200, 30, run.log)
    finally:
        run.close()
        server.stop()
