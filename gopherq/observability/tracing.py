"""OpenTelemetry tracing: a PRODUCER span per message sent, a CONSUMER span per run.

``TracingMiddleware`` (installed while the setting ``tracing`` is on, the
default) follows the OpenTelemetry messaging semantic conventions:

- sending (``.delay()``, ``apply_async()``, ``send_many``, the beat) opens a
  span ``send {queue}`` (kind PRODUCER) per message, a child of the current
  span, and writes its W3C trace context (``traceparent``, ``tracestate``,
  through the global propagator) into the message's ``headers``;
- the worker runs each attempt inside a span ``process {queue}`` (kind
  CONSUMER) whose parent is the context read back from the headers, so that a
  retry is a new span beside the first, in the same trace. The span is current
  while the task runs: its own spans and the tasks it sends are its children,
  and its log records carry the trace id (``gopherq.observability.logs``).

Both carry ``messaging.system`` (``gopherq``), ``messaging.operation.type`` and
``messaging.operation.name`` (``send`` or ``process``),
``messaging.destination.name`` (the queue), ``messaging.message.id``,
``gopherq.task.name`` and ``gopherq.task.attempt``. A failed attempt (retry,
dead letter) records its exception and ends with status ERROR.

Only opentelemetry-api is needed. Until a TracerProvider is set (the SDK,
usually in ``Middleware.worker_process_init`` in workers), each hook returns
after one look at the global provider: no span, no header. Header values of
a foreign producer that are not a valid trace context are ignored.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gopherq.context import TaskContext
from gopherq.message import MAX_HEADER_KEY, MAX_HEADERS, Message, field_problem
from gopherq.middleware import Middleware

if TYPE_CHECKING:
    from gopherq.app import GopherQ
    from gopherq.runner import Outcome

SYSTEM = "gopherq"
"""``messaging.system``."""
_FLUSH_MILLIS = 5000
"""How long a worker process waits for its spans to be exported as it exits."""
_SMALL_HEADERS = 4096
"""Bytes of injected header text under which no size check is needed."""


class TracingMiddleware(Middleware):
    """Producer and consumer spans around sending and running tasks.

    ``tracer_provider``: the provider to use; by default the global one
    (``opentelemetry.trace.set_tracer_provider``), looked up on each use, so
    that one set after the fork (in a worker process) takes effect.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._given = tracer_provider
        self._provider: TracerProvider | None = None  # the one _tracer came from
        self._tracer: Tracer | None = None
        self._sending: dict[int, list[Span]] = {}  # id(batch) -> its spans, until sent
        # id(TaskContext) -> the run's open span and the token that made it current
        # (a run's context lives until its after_execute; eager runs nest).
        self._open: dict[int, tuple[Span, Token[otel_context.Context]]] = {}
        self._names: dict[str, str] = {}  # queue -> its span name "process {queue}"

    def tracer(self) -> Tracer | None:
        """The tracer in force; None while no TracerProvider is set (the no-op API)."""
        provider = self._given or _global_provider()
        if provider is None:
            return None
        if provider is not self._provider:
            self._provider = provider
            noop = isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))
            self._tracer = None if noop else provider.get_tracer("gopherq", _version())
        return self._tracer

    # Sending.

    def before_enqueue(self, app: GopherQ, messages: Sequence[Message]) -> None:
        """Open a ``send`` span per message and write its context into the headers."""
        tracer = self.tracer()
        if tracer is None:
            return
        spans = []
        for message in messages:
            span = tracer.start_span(
                f"send {message.queue}",
                kind=SpanKind.PRODUCER,
                attributes=_attributes("send", message, message.attempt),
            )
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            _carry(message, carrier)
            spans.append(span)
        self._sending[id(messages)] = spans

    def after_enqueue(self, app: GopherQ, messages: Sequence[Message], ids: Sequence[str]) -> None:
        """End the batch's ``send`` spans."""
        for span in self._sending.pop(id(messages), ()):
            span.end()

    def on_enqueue_error(
        self, app: GopherQ, messages: Sequence[Message], error: BaseException
    ) -> None:
        """End the batch's ``send`` spans with the error."""
        for span in self._sending.pop(id(messages), ()):
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()

    # Running.

    def before_execute(self, app: GopherQ, message: Message, context: TaskContext) -> None:
        """Open the ``process`` span, child of the producer's, and make it current."""
        tracer = self.tracer()
        if tracer is None:
            return
        parent = _extract(message.headers)
        span = tracer.start_span(
            self._process_name(message.queue),
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_attributes("process", message, context.attempt),
        )
        # attach, not use_span: the span is current until after_execute (another
        # hook), and use_span's exception recording is done by _end.
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        self._open[id(context)] = (span, token)

    def _process_name(self, queue: str) -> str:
        """``process {queue}``, built once per queue (a worker has few queues)."""
        name = self._names.get(queue)
        if name is None:
            name = self._names[queue] = f"process {queue}"
        return name

    def after_execute(
        self,
        app: GopherQ,
        message: Message,
        context: TaskContext,
        outcome: Outcome,
        runtime: float,
    ) -> None:
        """End the ``process`` span with the outcome; a run that never started (it
        could not, or its process was killed) gets a span of its own here."""
        running = self._open.pop(id(context), None)
        if running is not None:
            span, token = running
            otel_context.detach(token)
        else:
            tracer = self.tracer()
            if tracer is None:
                return
            span = tracer.start_span(
                self._process_name(message.queue),
                context=_extract(message.headers),
                kind=SpanKind.CONSUMER,
                attributes=_attributes("process", message, context.attempt),
                start_time=time.time_ns() - int(runtime * 1e9),
            )
        _end(span, outcome)

    def worker_process_shutdown(self, app: GopherQ) -> None:
        """Export what the provider still buffers before the process exits."""
        provider = self._given or _global_provider()
        flush = getattr(provider, "force_flush", None)
        if callable(flush):
            flush(_FLUSH_MILLIS)


def _global_provider() -> TracerProvider | None:
    """The global TracerProvider, or None while none is set.

    ``trace.get_tracer_provider()`` looks the environment up on every call until a
    provider is set: the no-op hot path would pay that twice a task. So while the
    API's own global is None (and no provider is named in the environment) this is
    one attribute read; if the attribute were ever renamed, the public call decides.
    """
    if _NO_PROVIDER_IN_ENV and getattr(trace, "_TRACER_PROVIDER", True) is None:
        return None
    return trace.get_tracer_provider()


_NO_PROVIDER_IN_ENV = OTEL_PYTHON_TRACER_PROVIDER not in os.environ


def _attributes(operation: str, message: Message, attempt: int) -> dict[str, str | int]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": message.queue,
        "messaging.message.id": message.id,
        "gopherq.task.name": message.task,
        "gopherq.task.attempt": attempt,
    }


def _end(span: Span, outcome: Outcome) -> None:
    """Set the outcome on ``span`` (the error of a failed attempt) and end it."""
    if outcome.action == "ack":  # the commonest: status UNSET says it
        span.end()
        return
    span.set_attribute("gopherq.task.outcome", outcome.action)
    if outcome.action in ("retry", "dead"):
        error = outcome.record.error if outcome.record is not None else None
        attributes = {"exception.message": outcome.error}
        if error is not None:
            attributes = {
                "exception.type": error.type,
                "exception.message": error.message,
                "exception.stacktrace": error.traceback,
            }
            span.set_attribute("error.type", error.type)
        if outcome.reason is not None:
            span.set_attribute("gopherq.task.dead_reason", outcome.reason.value)
        span.add_event("exception", attributes)
        span.set_status(Status(StatusCode.ERROR, outcome.error))
    span.end()


def _carry(message: Message, carrier: dict[str, str]) -> None:
    """Add the injected ``carrier`` to the message's headers, if they stay within the
    envelope's limits (else the message would be refused at the worker): else
    only ``traceparent``, else nothing."""
    headers = message.headers
    if not headers and sum(len(k) + len(v) for k, v in carrier.items()) < _SMALL_HEADERS:
        message.headers = carrier
        return
    for keep in (carrier, {k: v for k, v in carrier.items() if k == "traceparent"}):
        merged = {**headers, **keep}
        if (
            len(merged) <= MAX_HEADERS
            and all(len(key) <= MAX_HEADER_KEY for key in keep)
            and field_problem("headers", merged) is None
        ):
            message.headers = merged
            return


class _TextHeaders(Getter[Mapping[str, Any]]):
    """Reads header values that are text; any other value (a foreign producer's
    number, bytes, list) counts as absent, so the propagator never sees it."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key for key in carrier if isinstance(key, str)]


_GETTER = _TextHeaders()
_EMPTY = otel_context.Context()
_TRACECONTEXT = TraceContextTextMapPropagator()


def _extract(headers: Mapping[str, Any]) -> otel_context.Context:
    """The trace context the headers carry; an empty one (a new trace) when they
    carry none, or one the propagator cannot read."""
    if not headers:
        return _EMPTY
    try:
        if _w3c_only(propagate.get_global_textmap()) and "baggage" not in headers:
            # What the default propagator would do, without its composite and
            # baggage passes.
            traceparent = headers.get("traceparent")
            if not isinstance(traceparent, str):  # absent, or not text: no parent
                return _EMPTY
            if not isinstance(headers.get("tracestate"), str):
                parent = _parse_traceparent(traceparent)
                if parent is not None:
                    return parent
            return _TRACECONTEXT.extract(headers, _EMPTY, _GETTER)
        return propagate.extract(headers, _EMPTY, _GETTER)
    except Exception:  # a third-party propagator's bug must not stop the task
        return _EMPTY


_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
"""A version 00 ``traceparent`` as W3C producers write it (this library too)."""
_FLAGS = [TraceFlags(flags) for flags in range(256)]


def _parse_traceparent(value: str) -> otel_context.Context | None:
    """The context of a ``traceparent`` of the plain version 00 form (no
    ``tracestate`` beside it): what ``TraceContextTextMapPropagator.extract`` gives
    for it, in about half its time. None for any other text (other
    versions, spaces around it, too long, not hex), which the propagator reads.
    """
    match = _TRACEPARENT_00.fullmatch(value)
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    parent = SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=_FLAGS[int(flags, 16)]
    )
    if not parent.is_valid:  # an id of zeros: the propagator ignores the header
        return _EMPTY
    return trace.set_span_in_context(NonRecordingSpan(parent), _EMPTY)


_W3C = (TraceContextTextMapPropagator, W3CBaggagePropagator)
_default_textmap: list[TextMapPropagator] = []  # the global propagator last found default


def _w3c_only(textmap: TextMapPropagator) -> bool:
    """Whether ``textmap`` is the API's default propagator (W3C trace context and
    baggage) or the trace context one alone: then only these headers matter."""
    if _default_textmap and _default_textmap[0] is textmap:
        return True
    if type(textmap) is TraceContextTextMapPropagator:
        default = True
    elif type(textmap) is CompositePropagator:
        kinds = tuple(type(p) for p in getattr(textmap, "_propagators", ()))
        default = kinds in (_W3C, _W3C[:1])
    else:
        default = False
    if default:
        _default_textmap[:] = [textmap]
    return default


def _version() -> str:
    from gopherq.version import __version__

    return __version__
