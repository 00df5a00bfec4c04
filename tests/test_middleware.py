"""Middleware hooks: order, arguments, failures, vetoes (in-process, memory://)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from test_events import drain

from gopherq import GopherQ
from gopherq.context import TaskContext
from gopherq.message import Message
from gopherq.middleware import Middleware
from gopherq.runner import Outcome

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("t", broker="memory://")


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def before_enqueue(self, app: GopherQ, messages: Sequence[Message]) -> None:
        self.calls.append(f"{self.name}.before_enqueue {len(messages)}")

    def after_enqueue(self, app: GopherQ, messages: Sequence[Message], ids: Sequence[str]) -> None:
        self.calls.append(f"{self.name}.after_enqueue")

    def before_execute(self, app: GopherQ, message: Message, context: TaskContext) -> None:
        self.calls.append(f"{self.name}.before_execute {context.attempt}")

    def after_execute(
        self,
        app: GopherQ,
        message: Message,
        context: TaskContext,
        outcome: Outcome,
        runtime: float,
    ) -> None:
        self.calls.append(f"{self.name}.after_execute {outcome.action}")

    def on_retry(self, app: GopherQ, message: Message, outcome: Outcome) -> None:
        self.calls.append(f"{self.name}.on_retry")

    def on_dead(self, app: GopherQ, message: Message, outcome: Outcome) -> None:
        self.calls.append(f"{self.name}.on_dead {outcome.reason}")


def test_middleware_hooks_in_order(caplog: Any) -> None:
    calls: list[str] = []

    class Broken(Middleware):
        def after_execute(self, *args: Any) -> None:
            raise RuntimeError("metrics exporter down")

    app = GopherQ("t", broker="memory://", events=None, middleware=[Recorder("a", calls)])
    app.add_middleware(Recorder("b", calls))
    app.add_middleware(Broken())

    @app.task(retries=1, retry_delay=0.01, jitter=False)
    def flaky() -> None:
        raise ValueError("x")

    flaky.delay()
    drain(app)
    assert calls == [
        "a.before_enqueue 1",
        "b.before_enqueue 1",
        "b.after_enqueue",
        "a.after_enqueue",
        "a.before_execute 0",
        "b.before_execute 0",
        "b.after_execute retry",
        "a.after_execute retry",
        "b.on_retry",
        "a.on_retry",
        "a.before_execute 1",
        "b.before_execute 1",
        "b.after_execute dead",
        "a.after_execute dead",
        "b.on_dead MAX_RETRIES",
        "a.on_dead MAX_RETRIES",
    ]
    assert "metrics exporter down" in caplog.text
    with pytest.raises(TypeError, match="subclass"):
        app.add_middleware(object())  # type: ignore[arg-type]


def test_before_enqueue_can_refuse(app: GopherQ) -> None:
    class Refuse(Middleware):
        def before_enqueue(self, app: GopherQ, messages: Sequence[Message]) -> None:
            raise PermissionError("no")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    app.add_middleware(Refuse())
    with pytest.raises(PermissionError):
        add.delay(1, 2)
    assert app.broker.stats() == {} or app.broker.stats()["default"].ready == 0


class Lifecycle(Middleware):
    """Records the enqueue-error and process hooks."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def on_enqueue_error(
        self, app: GopherQ, messages: Sequence[Message], error: BaseException
    ) -> None:
        self.calls.append(f"{self.name}.on_enqueue_error {type(error).__name__}")

    def worker_process_init(self, app: GopherQ) -> None:
        self.calls.append(f"{self.name}.worker_process_init")

    def worker_process_shutdown(self, app: GopherQ) -> None:
        self.calls.append(f"{self.name}.worker_process_shutdown")


def test_a_batch_not_sent_reaches_on_enqueue_error(
    app: GopherQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Refuse(Middleware):
        def before_enqueue(self, app: GopherQ, messages: Sequence[Message]) -> None:
            raise PermissionError("no")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    app.add_middleware(Lifecycle("a", calls))
    app.add_middleware(Lifecycle("b", calls))

    def down(envelopes: Any) -> list[str]:
        raise ConnectionError("broker down")

    with monkeypatch.context() as patch:
        patch.setattr(app.broker, "enqueue", down)
        with pytest.raises(ConnectionError):
            add.delay(1, 2)
    refuse = Refuse()
    app.add_middleware(refuse)
    with pytest.raises(PermissionError):
        add.delay(1, 2)
    app.middleware.remove(refuse)
    assert calls == [
        "b.on_enqueue_error ConnectionError",
        "a.on_enqueue_error ConnectionError",
        "b.on_enqueue_error PermissionError",
        "a.on_enqueue_error PermissionError",
    ]
    calls.clear()
    add.delay(1, 2)  # sent: no error hook
    assert calls == []


def test_process_hooks_run_in_order_and_survive_a_failure(caplog: Any) -> None:
    calls: list[str] = []

    class Broken(Middleware):
        def worker_process_init(self, app: GopherQ) -> None:
            raise RuntimeError("no collector")

    app = GopherQ("t", broker="memory://", events=None, tracing=False)
    for member in (Lifecycle("a", calls), Broken(), Lifecycle("b", calls)):
        app.add_middleware(member)
    app.middleware.worker_process_init(app)
    app.middleware.worker_process_shutdown(app)
    assert calls == [
        "a.worker_process_init",
        "b.worker_process_init",
        "b.worker_process_shutdown",
        "a.worker_process_shutdown",
    ]
    assert "no collector" in caplog.text
