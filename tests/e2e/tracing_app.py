"""The app of the tracing e2e test; copied into the test's directory as ``tasks.py``.

Each worker process sets up the OpenTelemetry SDK after the fork (the
``worker_process_init`` hook, as docs/observability.md shows) with an exporter
that appends each span as a JSON line to ``spans.jsonl`` beside this file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from gopherq import GopherQ, Middleware, current_task

SPANS = Path(__file__).with_name("spans.jsonl")
logger = logging.getLogger("tasks")


class JsonLinesExporter(SpanExporter):
    """Appends finished spans to ``SPANS``, one JSON object a line (one write each)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with SPANS.open("a") as out:
            for span in spans:
                out.write(json.dumps(describe(span)) + "\n")
        return SpanExportResult.SUCCESS


def describe(span: ReadableSpan) -> dict[str, object]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
    }


class Telemetry(Middleware):
    def worker_process_init(self, app: GopherQ) -> None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))
        trace.set_tracer_provider(provider)


app = GopherQ("tracing-e2e", middleware=[Telemetry()])


@app.task
def add(x: int, y: int) -> int:
    logger.info("adding %d and %d", x, y)
    return x + y


@app.task(retries=3, retry_delay=0.1, jitter=False)
def twice_failing() -> int:
    attempt = current_task().attempt
    if attempt < 2:
        raise ValueError(f"attempt {attempt} fails")
    return attempt
