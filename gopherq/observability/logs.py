"""Log set-up for gopherq's processes (worker, beat), and the running task on every record.

``configure_logging(level, log_format)`` gives the root logger one stderr
handler, unless logging is set up already (then only the level is set):

``console``
    ``time [LEVEL] message``; a record logged inside a task reads
    ``time [LEVEL] name[id]: message``. Control characters are escaped.
``json``
    one JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, ``process``, the task fields below when there are some,
    ``exc_info`` (the traceback as text) and any ``extra=`` fields.

``TaskFields``, the handler's filter, sets on every record logged inside a
task ``task_id``, ``task_name``, ``task_queue``, ``task_attempt`` and, while an
OpenTelemetry span is current (see ``gopherq.observability.tracing``),
``trace_id`` and ``span_id`` (hex), so that logs, metrics and traces join up.
Add it to your own handlers when you set logging up yourself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, TextIO

from opentelemetry import trace

from gopherq.context import _current
from gopherq.errors import ConfigurationError
from gopherq.redaction import printable_lines
from gopherq.settings import LOG_FORMATS

TASK_FIELDS = ("task_id", "task_name", "task_queue", "task_attempt", "trace_id", "span_id")
"""The record attributes ``TaskFields`` sets, in the order JSON lines show them."""

CONSOLE_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"
CONSOLE_TASK_FORMAT = "%(asctime)s [%(levelname)s] %(task_name)s[%(task_id)s]: %(message)s"


def configure_logging(level: str, log_format: str = "console") -> None:
    """Log to stderr at ``level`` (a name such as ``INFO``) in ``log_format`` (``console``
    or ``json``), unless logging is set up; then only the level is set."""
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ConfigurationError(f"unknown log level {level!r}")
    if log_format not in LOG_FORMATS:
        raise ConfigurationError(
            f"unknown log format {log_format!r}; use one of {', '.join(LOG_FORMATS)}"
        )
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(log_handler(log_format))
    root.setLevel(number)


def log_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in ``log_format``, with ``TaskFields``."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(TaskFields())
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    return handler


class TaskFields(logging.Filter):
    """Sets the running task's fields (``TASK_FIELDS``) on records logged inside a task.

    Outside a task it adds nothing, and a field the record already has (from
    ``extra=``) is kept. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if context is None or hasattr(record, "task_id"):
            return True
        record.task_id = context.id
        record.task_name = context.name
        record.task_queue = context.queue
        record.task_attempt = context.attempt
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


class ConsoleFormatter(logging.Formatter):
    """``CONSOLE_FORMAT``, or ``CONSOLE_TASK_FORMAT`` for a record with task fields.

    Escapes control characters (all but line breaks): task names and errors in
    log lines come from whoever can write to the broker, and the log may be a
    terminal.
    """

    def __init__(self) -> None:
        super().__init__(CONSOLE_FORMAT)
        self._in_task = logging.PercentStyle(CONSOLE_TASK_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        style = self._in_task if getattr(record, "task_id", None) is not None else self._style
        return style.format(record)

    def format(self, record: logging.LogRecord) -> str:
        return printable_lines(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (every control character escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        return json.dumps(line, default=str)


# What every LogRecord has (and what formatting adds): the rest came with ``extra=``.
_STANDARD = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        *TASK_FIELDS,
    }
)
