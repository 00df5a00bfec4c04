"""OpenTelemetry spans around sending and running (``gopherq.observability.tracing``).

In-process, with the SDK's in-memory exporter on a provider of the test's own
(given to ``TracingMiddleware``, so that no global provider is set for other
tests); the trip through a real worker is in tests/e2e/test_tracing_e2e.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gopherq import GopherQ, Middleware, current_task
from gopherq.beat import Beat
from gopherq.brokers import Delivery
from gopherq.errors import BrokerError
from gopherq.message import MAX_HEADERS, Message, new_id
from gopherq.observability.tracing import (
    TracingMiddleware,
    _extract,
    _parse_traceparent,
    _TextHeaders,
)
from gopherq.runner import Runner

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def traced_app(provider: TracerProvider, **settings: Any) -> GopherQ:
    settings.setdefault("broker", "memory://")
    app = GopherQ("traced", tracing=False, middleware=[TracingMiddleware(provider)], **settings)

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="flaky", retries=3, retry_delay=0)
    def flaky(succeed_at: int) -> int:
        attempt = current_task().attempt
        if attempt < succeed_at:
            raise ValueError(f"boom {attempt}")
        return attempt

    @app.task(name="outer")
    def outer() -> None:
        add.delay(1, 2)

    return app


def spans(exporter: InMemorySpanExporter, name: str | None = None) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if name is None or s.name == name]


def task_of(span: ReadableSpan) -> object:
    return (span.attributes or {}).get("gopherq.task.name")


def context_of(span: ReadableSpan) -> str:
    """The start of the ``traceparent`` that names ``span`` (the flags follow)."""
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"


def run_one(app: GopherQ, message: Message, attempt: int = 0) -> str:
    """Run ``message`` as a worker would; its outcome's action."""
    delivery = Delivery(
        id=message.id,
        queue=message.queue,
        priority=message.priority,
        body=app.codec.encode(message),
        attempt=attempt,
        deliveries=1,
        token="t",
    )
    return Runner(app, worker="test").run(delivery).action


def test_send_opens_a_producer_span_and_carries_its_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = traced_app(provider)
    with provider.get_tracer("test").start_as_current_span("handler") as handler:
        result = app.send_task("add", (1, 2), queue="maths")
    (send,) = spans(exporter, "send maths")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == handler.get_span_context().span_id
    assert send.context.trace_id == handler.get_span_context().trace_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "gopherq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "maths",
        "messaging.message.id": result.id,
        "gopherq.task.name": "add",
        "gopherq.task.attempt": 0,
    }
    (delivery,) = app.broker.reserve(["maths"], 1, 0)
    headers = app.codec.decode(delivery.body).headers
    assert headers["traceparent"].startswith(context_of(send))


def test_a_batch_has_a_span_per_message(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = traced_app(provider)
    add = app.get_task("add")
    app.send_many([add.s(i, i) for i in range(3)])
    sends = spans(exporter, "send default")
    assert len(sends) == 3 and len({s.context.span_id for s in sends}) == 3
    deliveries = app.broker.reserve(["default"], 9, 0)
    parents = {app.codec.decode(d.body).headers["traceparent"][:-3] for d in deliveries}
    assert parents == {context_of(s)[:-1] for s in sends}


def test_the_process_span_is_the_child_of_the_send_and_retries_are_siblings(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = traced_app(provider, eager=True)
    app.get_task("flaky").delay(2)
    (send,) = spans(exporter, "send default")
    runs = spans(exporter, "process default")
    assert [dict(s.attributes or {})["gopherq.task.attempt"] for s in runs] == [0, 1, 2]
    for run in runs:
        assert run.kind is SpanKind.CONSUMER
        assert run.context.trace_id == send.context.trace_id
        assert run.parent is not None and run.parent.span_id == send.context.span_id
        assert dict(run.attributes or {})["messaging.operation.type"] == "process"
    failed, _, succeeded = runs
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: boom 0"
    (event,) = failed.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "ValueError"
    assert "boom 0" in str(dict(event.attributes or {})["exception.stacktrace"])
    assert dict(failed.attributes or {})["gopherq.task.outcome"] == "retry"
    assert succeeded.status.status_code is StatusCode.UNSET
    assert "gopherq.task.outcome" not in dict(succeeded.attributes or {})  # ack: UNSET says it


def test_a_task_runs_inside_its_span_and_what_it_sends_is_a_child(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = traced_app(provider, eager=True)
    app.get_task("outer").delay()
    (outer_run,) = [s for s in spans(exporter, "process default") if task_of(s) == "outer"]
    (inner_send,) = [s for s in spans(exporter, "send default") if task_of(s) == "add"]
    assert inner_send.parent is not None and inner_send.parent.span_id == outer_run.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached after the run


def test_a_failed_send_ends_its_spans_with_the_error(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = traced_app(provider)

    def down(envelopes: Any) -> list[str]:
        raise BrokerError("broker down")

    monkeypatch.setattr(app.broker, "enqueue", down)
    with pytest.raises(BrokerError):
        app.send_task("add", (1, 2))
    (send,) = spans(exporter, "send default")
    assert send.status.status_code is StatusCode.ERROR
    assert [e.name for e in send.events] == ["exception"]


def test_a_refused_batch_ends_its_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    class Refuse(Middleware):
        def before_enqueue(self, app: GopherQ, messages: Sequence[Message]) -> None:
            raise PermissionError("no")

    app = traced_app(provider)
    app.add_middleware(Refuse())
    with pytest.raises(PermissionError):
        app.send_task("add", (1, 2))
    (send,) = spans(exporter, "send default")
    assert send.status.status_code is StatusCode.ERROR


def test_without_a_tracer_provider_nothing_is_added() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    app = GopherQ("plain", broker="memory://")  # tracing on: the default
    assert any(isinstance(m, TracingMiddleware) for m in app.middleware)
    app.send_task("add", (1, 2))
    (delivery,) = app.broker.reserve(["default"], 1, 0)
    assert app.codec.decode(delivery.body).headers == {}


def test_the_setting_installs_and_removes_the_middleware() -> None:
    app = GopherQ("switch", broker="memory://", events=False, tracing=False)
    assert not app.middleware
    app.config_from_object({"tracing": True})
    assert [type(m) for m in app.middleware] == [TracingMiddleware]
    app.config_from_object({"tracing": False})
    assert not app.middleware


JUNK: list[Any] = [
    1,
    -1,
    2**63,
    1.5,
    True,
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    [TRACEPARENT],
    [1, 2],
    {"traceparent": TRACEPARENT},
    "",
    "junk",
    "00-zz",
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" * 50,
    "\x00\x1b[31m",
]


@pytest.mark.parametrize("junk", JUNK, ids=lambda v: f"{type(v).__name__}:{v!r:.20}")
def test_junk_trace_headers_of_any_type_are_ignored(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    junk: Any,
) -> None:
    app = traced_app(provider)
    headers = {"traceparent": junk, "tracestate": junk, "baggage": junk}
    message = Message(id=new_id(), task="add", args=[1, 2], headers=headers)
    with caplog.at_level(logging.WARNING):
        assert run_one(app, message) == "ack"
    # (OpenTelemetry's baggage propagator warns about junk baggage: its own word)
    assert not [r for r in caplog.records if r.name.startswith("gopherq")]
    (run,) = spans(exporter, "process default")
    assert run.parent is None  # a trace of its own


@pytest.mark.parametrize("junk", JUNK, ids=lambda v: f"{type(v).__name__}:{v!r:.20}")
def test_a_junk_traceparent_alone_is_ignored(
    provider: TracerProvider, exporter: InMemorySpanExporter, junk: Any
) -> None:
    app = traced_app(provider)
    assert run_one(
        app, Message(id=new_id(), task="add", args=[1, 2], headers={"traceparent": junk})
    )
    (run,) = spans(exporter, "process default")
    assert run.parent is None


@pytest.mark.parametrize(
    "traceparent",
    [
        TRACEPARENT,
        TRACEPARENT[:-2] + "00",  # not sampled: the parent-based sampler drops the run
        f" {TRACEPARENT}\t",
        "01" + TRACEPARENT[2:] + "-a-later-version-field",
    ],
)
def test_every_traceparent_form_of_the_specification_gives_the_parent(
    provider: TracerProvider, exporter: InMemorySpanExporter, traceparent: str
) -> None:
    app = traced_app(provider)
    for headers in (
        {"traceparent": traceparent},
        {"traceparent": traceparent, "tracestate": "a=b"},
    ):
        message = Message(id=new_id(), task="add", args=[1, 2], headers=headers)
        with trace.use_span(trace.INVALID_SPAN):
            before = len(spans(exporter))
            run_one(app, message)
        runs = spans(exporter)[before:]
        if traceparent.endswith("-00"):
            assert runs == []
        else:
            (run,) = runs
            assert run.parent is not None and run.parent.is_remote
            assert context_of(run)[:36] == TRACEPARENT[:36]
            assert f"{run.parent.span_id:016x}" == TRACEPARENT.split("-")[2]


TRACEPARENTS: list[Any] = [
    *JUNK,
    TRACEPARENT,
    TRACEPARENT[:-2] + "00",
    TRACEPARENT[:-2] + "ff",
    TRACEPARENT.upper(),
    TRACEPARENT[:-1],  # one digit of flags
    TRACEPARENT + "-",
    TRACEPARENT + "-extra",
    TRACEPARENT + "\n",
    TRACEPARENT + " ",
    f" {TRACEPARENT}\t",
    "01" + TRACEPARENT[2:],
    "01" + TRACEPARENT[2:] + "-a-later-version-field",
    TRACEPARENT.replace("b7ad6b71", "b7ad_b71"),
    TRACEPARENT.replace("0af76519", "+af76519"),
    TRACEPARENT.replace("0af76519", " af76519"),
    TRACEPARENT.replace("0af76519", "0af7651\u0663"),  # a non-ASCII digit
    TRACEPARENT.replace("-b7ad", "_b7ad"),
    "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-03",
]


@pytest.mark.parametrize("traceparent", TRACEPARENTS, ids=lambda v: f"{type(v).__name__}:{v!r:.30}")
@pytest.mark.parametrize("tracestate", [None, "a=b", 5, "==,,junk"])
def test_the_worker_reads_headers_as_the_w3c_propagator_does(
    traceparent: Any, tracestate: Any
) -> None:
    """The worker's own reading of a plain ``traceparent`` (see ``_parse_traceparent``)
    gives the context the library's propagator gives, for any header value."""
    headers = {"traceparent": traceparent}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    expected = TraceContextTextMapPropagator().extract(headers, Context(), _TextHeaders())
    got = _extract(headers)
    assert list(got) == list(expected)
    assert trace.get_current_span(got).get_span_context() == (
        trace.get_current_span(expected).get_span_context()
    )


def test_a_plain_traceparent_is_read_without_the_propagator() -> None:
    """The common form takes the short way (else the comparison above proves nothing)."""
    for flags in ("00", "01", "03"):
        parent = _parse_traceparent(TRACEPARENT[:-2] + flags)
        assert parent is not None
        span_context = trace.get_current_span(parent).get_span_context()
        assert span_context.is_remote and span_context.is_valid
        assert span_context.trace_flags == int(flags, 16)
    for other in (f" {TRACEPARENT}", "01" + TRACEPARENT[2:], TRACEPARENT + "-x"):
        assert _parse_traceparent(other) is None


def test_a_valid_parent_with_junk_tracestate_keeps_the_parent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = traced_app(provider)
    for tracestate in (5, b"a=b", "==,,junk", ["a=b"]):
        headers = {"traceparent": TRACEPARENT, "tracestate": tracestate}
        run_one(app, Message(id=new_id(), task="add", args=[1, 2], headers=headers))
    runs = spans(exporter, "process default")
    assert len(runs) == 4
    assert {f"{r.context.trace_id:032x}" for r in runs} == {TRACEPARENT.split("-")[1]}


def test_a_propagator_set_by_the_user_reads_the_headers(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker reads W3C headers itself only while the default propagator is set."""

    class Renamed(TraceContextTextMapPropagator):
        """W3C trace context under another header name."""

        _TRACEPARENT_HEADER_NAME = "x-parent"

    monkeypatch.setattr(propagate, "get_global_textmap", Renamed)
    app = traced_app(provider)
    run_one(app, Message(id=new_id(), task="add", args=[1, 2], headers={"x-parent": TRACEPARENT}))
    (run,) = spans(exporter, "process default")
    assert f"{run.context.trace_id:032x}" == TRACEPARENT.split("-")[1]


def test_a_run_that_never_started_still_gets_a_span_in_the_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = traced_app(provider)
    message = Message(id=new_id(), task="nobody.knows", headers={"traceparent": TRACEPARENT})
    assert run_one(app, message) == "dead"
    (run,) = spans(exporter, "process default")
    assert f"{run.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert run.status.status_code is StatusCode.ERROR
    assert dict(run.attributes or {})["gopherq.task.dead_reason"] == "UNKNOWN_TASK"


def test_the_context_stays_within_the_header_limits(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = traced_app(provider)
    full = {f"h{i}": "v" for i in range(MAX_HEADERS - 1)}
    app.send_task("add", (1, 2), headers=full)  # room for traceparent only
    app.send_task("add", (1, 2), headers={**full, "last": "v"})  # no room: none added
    first, second = (app.codec.decode(d.body) for d in app.broker.reserve(["default"], 2, 0))
    assert set(first.headers) - set(full) == {"traceparent"}
    assert second.headers == {**full, "last": "v"}
    assert len(spans(exporter, "send default")) == 2


def test_beat_ticks_start_their_own_traces(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = traced_app(provider)
    app.add_periodic("add", every=1, args=(1, 2), name="tick")
    now = [1_700_000_000.5]

    def clock() -> float:
        return now[0]

    beat = Beat(app, loglevel=None, clock=clock)
    app.schedules.store.clock = clock  # type: ignore[attr-defined]
    app.schedules.clock = clock
    for _ in range(3):
        beat.step()
        now[0] += 1
    sends = spans(exporter, "send default")
    assert len(sends) >= 2
    assert all(s.parent is None for s in sends)
    assert len({s.context.trace_id for s in sends}) == len(sends)


def test_a_worker_process_flushes_its_spans_as_it_exits(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    app = traced_app(provider, eager=True)
    app.get_task("add").delay(1, 2)
    assert not spans(exporter)  # still in the batch
    app.middleware.worker_process_shutdown(app)
    assert {s.name for s in spans(exporter)} == {"send default", "process default"}
    provider.shutdown()
