"""docs/grafana/gopherq.json charts only metrics that gopherq really serves."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gopherq import GopherQ
from gopherq.brokers import Envelope
from gopherq.brokers.memory import MemoryBroker
from gopherq.context import TaskContext
from gopherq.events import Event, EventType
from gopherq.message import Message, new_id
from gopherq.observability.exporter import registry_for
from gopherq.observability.metrics import WorkerMetrics, WorkerView
from gopherq.runner import Outcome
from gopherq.states import DeadReason

DASHBOARD = Path(__file__).parents[1] / "docs" / "grafana" / "gopherq.json"


def worker_metrics() -> set[str]:
    """The gopherq metrics a worker serves (``gopherq worker --metrics-port``): its
    registry after one task of each outcome and a restart, scraped in process."""
    app = GopherQ("w", broker=MemoryBroker(), events=False)

    @app.task(name="t")
    def t() -> None: ...

    metrics = WorkerMetrics(app, ["default"], concurrency=1)
    metrics.middleware.attach(0)
    message = Message(new_id(), "t", created=time.time())
    context = TaskContext(message.id, "t", "default", 0, 3)
    for action, reason in (("ack", None), ("retry", None), ("dead", DeadReason.REJECTED)):
        outcome = Outcome(action, None, reason=reason)  # type: ignore[arg-type]
        metrics.middleware.after_execute(app, message, context, outcome, 0.01)
    metrics.exited(0, "died")
    registry = metrics.registry(lambda: WorkerView(children=1, running={"default": 1}))
    served = served_names(generate_latest(registry).decode())
    return {name for name in served if name.startswith("gopherq_")}


WORKER_METRICS = frozenset(
    {
        "gopherq_tasks_total",
        "gopherq_task_duration_seconds",
        "gopherq_task_queue_wait_seconds",
        "gopherq_tasks_in_progress",
        "gopherq_dead_letters_total",
        "gopherq_worker_children",
        "gopherq_worker_child_restarts_total",
    }
)
"""The worker metrics the issue names: the dashboard must chart each."""

_METRIC = re.compile(r"gopherq_[a-z_]+")
_SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def metric_names(expression: str) -> set[str]:
    """The gopherq metrics a PromQL expression names: a histogram's ``_bucket``,
    ``_sum`` and ``_count`` series stand for the histogram."""
    return {_base_name(token) for token in _METRIC.findall(expression)}


def _base_name(series: str) -> str:
    for suffix in _SERIES_SUFFIXES:
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def served_names(exposition: str) -> set[str]:
    """The metric names an exposition serves, as PromQL names them (sample names, so
    that a counter keeps its ``_total``; a histogram's series stand for it)."""
    return {
        _base_name(sample.name)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target (rows' panels too) and template query."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield (
                f"variable {variable['name']!r}",
                query["query"] if isinstance(query, dict) else query,
            )


def exporter_metrics() -> set[str]:
    """What ``gopherq exporter`` serves, scraped from it with every gauge present."""
    broker = MemoryBroker()
    broker.enqueue([Envelope("m1", "default", 2, b"body")])
    app = GopherQ("dashboard", broker=broker, events="memory://")
    app.events.backend.publish([Event(EventType.WORKER_ONLINE, time.time(), worker="w1")])
    return served_names(generate_latest(registry_for(app, cache_seconds=0)).decode())


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_every_expression_names_only_metrics_gopherq_serves(dashboard: dict[str, Any]) -> None:
    served = exporter_metrics() | worker_metrics()
    unknown = {
        where: sorted(metric_names(expr) - served)
        for where, expr in expressions(dashboard)
        if metric_names(expr) - served
    }
    assert unknown == {}


def test_every_expression_names_a_metric_and_balances(dashboard: dict[str, Any]) -> None:
    found = list(expressions(dashboard))
    assert len(found) > 20
    for where, expr in found:
        assert metric_names(expr), where
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), where


def test_it_charts_what_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    charted = set().union(*(metric_names(expr) for _, expr in expressions(dashboard)))
    assert worker_metrics() >= WORKER_METRICS
    assert charted >= WORKER_METRICS
    assert charted >= {
        "gopherq_queue_ready",
        "gopherq_queue_oldest_age_seconds",
        "gopherq_queue_dead",
        "gopherq_queue_paused",
        "gopherq_workers_online",
    }


def test_the_check_catches_a_misspelt_metric() -> None:
    served = exporter_metrics() | worker_metrics()
    good = "histogram_quantile(0.95, sum by (le) (rate(gopherq_task_duration_seconds_bucket[5m])))"
    assert metric_names(good) <= served
    assert metric_names("sum(gopherq_queue_depth)") - served == {"gopherq_queue_depth"}
    assert metric_names("rate(gopherq_task_total[5m])") - served == {"gopherq_task_total"}


def test_the_exporter_serves_its_gauges() -> None:
    assert exporter_metrics() >= {
        "gopherq_queue_ready",
        "gopherq_queue_scheduled",
        "gopherq_queue_running",
        "gopherq_queue_dead",
        "gopherq_queue_paused",
        "gopherq_queue_oldest_age_seconds",
        "gopherq_workers_online",
    }
