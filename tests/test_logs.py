"""Log set-up and the task's fields on records (``gopherq.observability.logs``)."""

from __future__ import annotations

import ast
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

import gopherq.beat
import gopherq.worker.supervisor
from gopherq import ConfigurationError, GopherQ, current_task
from gopherq.observability import logs
from gopherq.observability.logs import configure_logging, log_handler
from gopherq.observability.tracing import TracingMiddleware
from gopherq.settings import Settings

user = logging.getLogger("tests.user")


class Capture:
    """``log_handler``s on the logger ``tests.user`` (alone), writing to a string."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handlers: list[logging.Handler] = []

    def __call__(self, log_format: str) -> logging.Handler:
        handler = log_handler(log_format, self.stream)
        user.addHandler(handler)
        self.handlers.append(handler)
        return handler

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def capture() -> Iterator[Capture]:
    capture = Capture()
    user.propagate, user.level = False, logging.INFO
    try:
        yield capture
    finally:
        for handler in capture.handlers:
            user.removeHandler(handler)
        user.propagate, user.level = True, logging.NOTSET


def eager_app(**settings: object) -> GopherQ:
    app = GopherQ("logs", eager=True, **settings)  # type: ignore[arg-type]

    @app.task(name="shout")
    def shout(text: str) -> None:
        user.info("said %s", text)

    @app.task(name="crash")
    def crash() -> None:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            user.exception("caught")

    return app


def test_json_lines_carry_the_task_and_its_trace(
    capture: Capture,
) -> None:
    capture("json")
    provider = TracerProvider()
    app = eager_app(tracing=False, middleware=[TracingMiddleware(provider)])
    user.info("outside")
    with provider.get_tracer("test").start_as_current_span("request") as request:
        result = app.get_task("shout").delay("hello")
    outside, inside = (json.loads(line) for line in capture.lines())
    assert outside.keys() == {"time", "level", "logger", "message", "process"}
    assert outside["message"] == "outside" and outside["level"] == "INFO"
    assert outside["logger"] == "tests.user" and outside["time"].endswith("+00:00")
    assert inside["message"] == "said hello"
    assert inside["task_id"] == result.id
    assert inside["task_name"] == "shout"
    assert inside["task_queue"] == "default"
    assert inside["task_attempt"] == 0
    assert inside["trace_id"] == f"{request.get_span_context().trace_id:032x}"
    assert len(inside["span_id"]) == 16


def test_json_exc_info_is_text_on_one_line(
    capture: Capture,
) -> None:
    capture("json")
    eager_app(tracing=False).get_task("crash").delay()
    (line,) = capture.lines()
    record = json.loads(line)
    assert record["message"] == "caught"
    assert record["exc_info"].startswith("Traceback")
    assert "ValueError: bad\nvalue" in record["exc_info"]
    assert "trace_id" not in record  # no TracerProvider: no trace


def test_json_keeps_extra_fields_and_escapes_control_characters(
    capture: Capture,
) -> None:
    capture("json")
    user.warning("bell\x07 and \x1b[31m", extra={"order": 7, "task_id": "mine"})
    (line,) = capture.lines()
    assert "\x07" not in line and "\x1b" not in line
    record = json.loads(line)
    assert record["message"] == "bell\x07 and \x1b[31m"
    assert record["order"] == 7 and record["task_id"] == "mine"


def test_console_keeps_its_format_and_names_the_task(
    capture: Capture,
) -> None:
    capture("console")
    app = eager_app(tracing=False)
    user.info("worker line \x1b[2J")
    result = app.get_task("shout").delay("hi")
    worker_line, task_line = capture.lines()
    assert worker_line.endswith(" [INFO] worker line \\x1b[2J")
    assert task_line.endswith(f" [INFO] shout[{result.id}]: said hi")


def test_records_inside_a_task_carry_its_fields_for_any_formatter(
    capture: Capture,
) -> None:
    handler = capture("console")
    handler.setFormatter(logging.Formatter("%(task_name)s/%(task_attempt)s %(message)s"))
    app = eager_app(tracing=False)

    @app.task(name="again", retries=1, retry_delay=0)
    def again() -> None:
        user.info("try")
        if current_task().attempt == 0:
            raise ValueError("once more")

    again.delay()
    assert capture.lines() == ["again/0 try", "again/1 try"]


def test_logging_set_up_elsewhere_is_left_alone() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    mine = logging.NullHandler()
    root.addHandler(mine)
    try:
        configure_logging("WARNING", "json")
        assert root.handlers == [*handlers, mine] and root.level == logging.WARNING
    finally:
        root.removeHandler(mine)
        root.setLevel(level)


def test_bad_formats_and_levels_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown log format 'xml'; use one of console"):
        configure_logging("INFO", "xml")
    with pytest.raises(ConfigurationError, match="unknown log level"):
        configure_logging("LOUD")
    with pytest.raises(ConfigurationError, match="'log_format' must be one of console, json"):
        Settings.load({"log_format": "yaml"})


def test_the_setting_comes_from_the_environment() -> None:
    assert Settings.load({}, environ={}).log_format == "console"
    assert Settings.load({}, environ={"GOPHERQ_LOG_FORMAT": "json"}).log_format == "json"


def test_logging_set_up_lives_in_observability_and_the_beat_does_not_import_the_worker() -> None:
    assert gopherq.worker.supervisor.configure_logging is logs.configure_logging  # as before
    tree = ast.parse(Path(gopherq.beat.__file__).read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert "gopherq.observability.logs" in imported
    assert not {name for name in imported if name.startswith("gopherq.worker")}
