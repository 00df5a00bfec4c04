"""One trace from a producer span in this process to the worker's spans, across a
real ``-c 2`` prefork worker that sets its TracerProvider up after the fork;
JSON log lines that carry the task and its trace; junk trace headers. On each
broker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from harness import HERE, Run, on_each_broker, run, stop, wait_for
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gopherq import GopherQ
from gopherq.brokers import Envelope
from gopherq.message import Message, new_id
from gopherq.observability.tracing import TracingMiddleware

__all__ = ["run"]  # the fixture
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90), on_each_broker]

WAIT = 30.0


def worker_spans(path: Path) -> list[dict[str, Any]]:
    spans = path / "spans.jsonl"
    return [json.loads(line) for line in spans.read_text().splitlines()] if spans.exists() else []


def test_one_trace_from_the_producer_to_the_worker(run: Run) -> None:
    shutil.copy(HERE / "tracing_app.py", run.path / "tasks.py")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = GopherQ(
        "web", broker=run.url, tracing=False, middleware=[TracingMiddleware(provider)]
    )
    worker = run.worker("-c", "2", "--log-format", "json")
    try:
        with provider.get_tracer("web").start_as_current_span("POST /orders") as request:
            added = producer.send_task("tasks.add", (2, 3))
            flaky = producer.send_task("tasks.twice_failing")
        junk = [
            Message(
                id=new_id(),
                task="tasks.add",
                args=[1, 1],
                headers={"traceparent": value, "tracestate": value},
            )
            for value in (7, b"\x00", ["x"], {"a": 1}, "00-junk", 1.5)
        ]
        producer.broker.enqueue(
            [Envelope(m.id, m.queue, m.priority, producer.codec.encode(m)) for m in junk]
        )
        assert added.get(timeout=WAIT) == 5
        assert flaky.get(timeout=WAIT) == 2
        assert [producer.result(m.id).get(timeout=WAIT) for m in junk] == [2] * len(junk)
        wait_for(lambda: len(worker_spans(run.path)) >= 4 + len(junk), WAIT, run.log)
        assert stop(worker) == 0, run.log()
    finally:
        producer.close()
    trace_id = f"{request.get_span_context().trace_id:032x}"
    sends = {
        s.attributes["messaging.message.id"]: s
        for s in exporter.get_finished_spans()
        if s.name == "send default"
    }
    assert set(sends) == {added.id, flaky.id}
    spans = worker_spans(run.path)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_id.setdefault(span["attributes"]["messaging.message.id"], []).append(span)

    (add_run,) = by_id[added.id]
    send = sends[added.id]
    assert add_run["name"] == "process default" and add_run["kind"] == "CONSUMER"
    assert add_run["trace_id"] == trace_id
    assert add_run["parent_id"] == f"{send.context.span_id:016x}"
    assert add_run["status"] == "UNSET"
    assert add_run["attributes"] == {
        "messaging.system": "gopherq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": added.id,
        "gopherq.task.name": "tasks.add",
        "gopherq.task.attempt": 0,
    }

    runs = sorted(by_id[flaky.id], key=lambda s: s["attributes"]["gopherq.task.attempt"])
    assert [r["attributes"]["gopherq.task.attempt"] for r in runs] == [0, 1, 2]
    assert {r["trace_id"] for r in runs} == {trace_id}
    assert {r["parent_id"] for r in runs} == {f"{sends[flaky.id].context.span_id:016x}"}
    assert [r["status"] for r in runs] == ["ERROR", "ERROR", "UNSET"]
    assert runs[0]["events"] == ["exception"]

    for message in junk:  # ran, each in a trace of its own
        (junk_run,) = by_id[message.id]
        assert junk_run["parent_id"] is None and junk_run["status"] == "UNSET"

    lines = [json.loads(line) for line in run.log().splitlines()]  # every line is JSON
    (added_line,) = [line for line in lines if line["message"] == "adding 2 and 3"]
    assert added_line["task_id"] == added.id
    assert added_line["task_name"] == "tasks.add"
    assert added_line["task_attempt"] == 0
    assert added_line["trace_id"] == trace_id
    assert added_line["span_id"] == add_run["span_id"]
    assert any(" ready: " in line["message"] for line in lines)
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
