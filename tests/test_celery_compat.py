"""What Celery users reach for: Celery's names work, or say what gopherq has instead."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gopherq import (
    ConfigurationError,
    EagerResult,
    GopherQ,
    Retry,
    SerializationError,
    State,
    TaskContext,
    TaskFailed,
    current_task,
)
from gopherq.errors import ResultTimeout, TaskError
from gopherq.results import ErrorInfo, JobRecord
from gopherq.worker import Consumer, Worker


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("celery-compat", broker="memory://")


def drain(app: GopherQ, queues: list[str] | None = None) -> None:
    """Run every queued task in this thread."""
    Consumer(app, queues or ["default"], burst=True, reserve_timeout=0.05).run()


# AsyncResult: status, result, traceback, wait, revoke.


def test_status_is_state(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)
    assert result.status is result.state is State.QUEUED
    drain(app)
    assert result.status is State.SUCCEEDED
    assert result.task_id == result.id


def test_result_and_traceback_follow_the_record(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def boom() -> None:
        raise ValueError("bad input")

    ok, failed = add.delay(1, 2), boom.delay()
    assert ok.result is None and ok.traceback is None  # queued: nothing yet
    drain(app)
    assert ok.result == 3
    assert ok.traceback is None
    error = failed.result
    assert isinstance(error, TaskFailed)
    assert (error.type_name, error.message) == ("ValueError", "bad input")
    assert failed.traceback is not None
    assert 'raise ValueError("bad input")' in failed.traceback
    assert app.result("no-such-id").result is None


def test_result_while_retrying_is_the_last_error(app: GopherQ) -> None:
    error = ErrorInfo("OSError", "disk full", "Traceback ...")
    app.backend.store([JobRecord(id="r1", task="t", state=State.RETRYING, error=error)])
    result = app.result("r1").result
    assert isinstance(result, TaskFailed)
    assert result.type_name == "OSError"
    assert app.result("r1").traceback == "Traceback ..."


def test_cancelled_result_is_a_failure(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)
    assert result.revoke() is True
    assert result.status is State.CANCELLED
    assert isinstance(result.result, TaskFailed)
    assert result.result.type_name == "TaskCancelled"
    assert result.revoke(terminate=True) is False  # finished now: nothing to cancel


def test_revoke_takes_celerys_keywords_and_waits(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)
    assert result.revoke(terminate=True, signal="SIGKILL", wait=True, timeout=5) is True
    assert result.state is State.CANCELLED
    with pytest.raises(TypeError):
        result.revoke(True)  # type: ignore[misc]  # keywords only, as Celery callers write them


def test_wait_is_get_with_celerys_signature(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def boom() -> None:
        raise ValueError("nope")

    ok, failed = add.delay(2, 3), boom.delay()
    with pytest.raises(ResultTimeout):
        ok.wait(timeout=0.01, interval=0.01)
    drain(app)
    assert ok.wait(timeout=5) == 5
    with pytest.raises(TaskFailed, match="nope"):
        failed.wait(timeout=5)
    assert isinstance(failed.wait(timeout=5, propagate=False), TaskFailed)


def test_celery_result_attributes_say_what_gopherq_has(app: GopherQ) -> None:
    result = app.result("x")
    with pytest.raises(AttributeError, match=r"record\(\)\.finished"):
        result.date_done  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="'AsyncResult' object has no attribute 'nope'"):
        result.nope  # type: ignore[attr-defined]  # noqa: B018


# task.apply() and EagerResult.


def test_apply_runs_inline_through_the_codec_without_a_backend(app: GopherQ) -> None:
    @app.task
    def later(moment: dt.datetime) -> dt.datetime:
        return moment + dt.timedelta(days=1)

    moment = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    result = later.apply((moment,))
    assert isinstance(result, EagerResult)
    assert result.get() == moment + dt.timedelta(days=1)
    assert result.wait() == result.get()
    assert result.status is result.state is State.SUCCEEDED
    assert result.result == result.get()
    assert result.traceback is None
    assert result.ready() and result.successful() and not result.failed()
    assert result.id == result.task_id
    assert app._backend is None  # no result store was opened
    assert app.result(result.id).state is State.PENDING  # nor written to

    with pytest.raises(SerializationError, match=r"args\[0\]"):
        later.apply((object(),))


def test_apply_failure_retries_at_once_then_fails(app: GopherQ) -> None:
    runs: list[int] = []

    @app.task(retries=2, retry_delay=3600)
    def flaky() -> None:
        runs.append(current_task().attempt)
        raise OSError("down")

    result = flaky.apply()
    assert runs == [0, 1, 2]
    assert result.state is State.FAILED
    assert result.failed() and result.ready() and not result.successful()
    with pytest.raises(TaskFailed, match="OSError: down"):
        result.get()
    failure = result.get(propagate=False)
    assert isinstance(failure, TaskFailed)
    assert result.result is not None
    assert result.traceback is not None and "OSError" in result.traceback


def test_apply_takes_send_options(app: GopherQ) -> None:
    @app.task
    def whoami() -> list[Any]:
        context = current_task()
        return [context.id, context.queue, context.retries]

    result = whoami.apply(task_id="fixed-id", queue="elsewhere", max_retries=4, countdown=60)
    assert result.id == "fixed-id"
    assert result.get() == ["fixed-id", "elsewhere", 4]
    with pytest.raises(ConfigurationError, match="did you mean 'queue'"):
        whoami.apply(queu="x")


def test_apply_of_an_ignore_result_task_succeeds_without_a_value(app: GopherQ) -> None:
    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    result = quiet.apply()
    assert result.successful()
    assert result.get() is None


# bind=True.


def test_bind_passes_the_task_context_first(app: GopherQ) -> None:
    seen: list[TaskContext] = []

    @app.task(bind=True, max_retries=1)
    def add(self: TaskContext, x: int, y: int) -> int:
        seen.append(self)
        if self.attempt == 0:
            self.retry(countdown=0)  # raises, as Celery's self.retry() does
        return x + y

    assert list(add.signature.parameters) == ["x", "y"]
    result = add.delay(1, 2)
    drain(app)
    assert result.get(timeout=5) == 3
    assert [c.attempt for c in seen] == [0, 1]
    assert {c.id for c in seen} == {result.id}
    assert seen[0].name == add.name and seen[0].retries == 1
    with pytest.raises(TypeError, match="too many positional arguments"):
        add.delay(1, 2, 3)


def test_bind_async_task_and_apply(app: GopherQ) -> None:
    @app.task(bind=True)
    async def name_of(self: TaskContext, suffix: str) -> str:
        return self.name + suffix

    assert name_of.is_async
    assert name_of.apply(("!",)).get() == name_of.name + "!"


def test_bound_task_called_directly_gets_a_bare_context(app: GopherQ) -> None:
    @app.task(bind=True, queue="q", retries=2)
    def describe(self: TaskContext) -> tuple[str, int, int]:
        return self.queue, self.attempt, self.retries

    assert describe() == ("q", 0, 2)

    @app.task(bind=True)
    def progress(self: TaskContext) -> None:
        self.progress(1, 2)

    with pytest.raises(TaskError, match="no job control"):
        progress()


def test_bind_needs_a_first_parameter(app: GopherQ) -> None:
    with pytest.raises(ConfigurationError, match="first parameter"):

        @app.task(bind=True)
        def nothing() -> None:
            pass


def test_context_says_what_celerys_request_is() -> None:
    context = TaskContext("id", "t", "default", 0, 3)
    with pytest.raises(AttributeError, match=r"\.attempt \(Celery's request\.retries\)"):
        context.request  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="progress"):
        context.update_state  # type: ignore[attr-defined]  # noqa: B018


def test_retry_raises() -> None:
    context = TaskContext("id", "t", "default", 0, 3)
    with pytest.raises(Retry) as caught:
        context.retry(countdown=5)
    assert caught.value.countdown == 5


# Celery's option names.


def test_celery_task_option_aliases(app: GopherQ) -> None:
    @app.task(max_retries=4, time_limit=30, soft_time_limit=20, acks_late=True)
    def f() -> None:
        pass

    assert (f.options.retries, f.options.timeout, f.options.soft_timeout) == (4, 30, 20)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": 1, "retries": 2}, "'max_retries' and 'retries' are the same"),
        ({"default_retry_delay": 5}, "'default_retry_delay' is Celery's: gopherq has retry_delay"),
        ({"acks_late": False}, "always acknowledges after the task ran"),
        ({"retry_backoff": True}, "gopherq has backoff"),
        ({"serializer": "json"}, "msgpack"),
    ],
)
def test_celery_task_options_that_differ_say_so(
    app: GopherQ, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):

        @app.task(**options)
        def f() -> None:
            pass


def test_celery_send_option_aliases(app: GopherQ) -> None:
    @app.task
    def f() -> None:
        pass

    f.apply_async(max_retries=3, time_limit=9)
    message = app.codec.decode(app.broker.reserve(["default"], 1, 0)[0].body)
    assert (message.retries, message.timeout) == (3, 9)
    with pytest.raises(ConfigurationError, match="BrokerError"):
        f.apply_async(retry=True)
    with pytest.raises(ConfigurationError, match="the same"):
        f.s().set(retries=1, max_retries=2)


# task_routes.


def test_routes_set_the_queue_and_priority_of_matching_tasks() -> None:
    app = GopherQ(
        "routes",
        broker="memory://",
        task_routes={
            "shop.mail.urgent": {"queue": "urgent", "priority": "high"},
            "shop.mail.*": {"queue": "mail"},
            "shop.*": "shop",  # a queue name alone, as Celery allows
        },
    )

    @app.task(name="shop.mail.urgent")
    def urgent() -> None:
        pass

    @app.task(name="shop.mail.send")
    def send() -> None:
        pass

    @app.task(name="shop.report")
    def report() -> None:
        pass

    @app.task(name="shop.mail.pinned", queue="pinned")  # the decorator wins over routes
    def pinned() -> None:
        pass

    @app.task(name="other")
    def other() -> None:
        pass

    assert (urgent.options.queue, urgent.options.priority) == ("urgent", 1)
    assert send.options.queue == "mail"  # first matching pattern wins
    assert report.options.queue == "shop"
    assert pinned.options.queue == "pinned"
    assert other.options.queue == "default"
    send.apply_async(queue="elsewhere")  # an explicit queue at send time wins
    app.send_task("shop.mail.remote")  # not registered here: routed at send time
    assert set(app.broker.stats()) == {"elsewhere", "mail"}
    assert Worker(app).queues == ["default", "mail", "pinned", "shop", "urgent"]


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({"a.*": {"queue": "q", "routing_key": "x"}}, "gopherq routes by queue only"),
        ({"a.*": {"queu": "q"}}, "did you mean 'queue'"),
        ({"a.*": {"priority": "urgent"}}, "unknown priority"),
        ({"a.*": {"queue": ""}}, "queue"),
        ({"a.*": {"queue": None}}, "queue is missing"),
        ({"a.*": 3}, "must be a queue name or a map"),
    ],
)
def test_bad_routes_fail_when_the_app_is_made(routes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        GopherQ("routes", broker="memory://", task_routes=routes)


def test_routes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPHERQ_TASK_ROUTES", '{"jobs.*": {"queue": "jobs"}}')
    app = GopherQ("routes", broker="memory://")

    @app.task(name="jobs.run")
    def run() -> None:
        pass

    assert run.options.queue == "jobs"


# config_from_object.

CONFIG_MODULE = """
import os
from datetime import timedelta

REDIS_HOST = "127.0.0.1"  # a helper constant: passed over
BROKER_URL = "memory://"  # Celery's old upper case
result_expires = 60.0
task_routes = {"mail.*": {"queue": "mail"}}


class Config:
    default_queue = "work"
    max_deliveries = 2
"""


@pytest.fixture
def config_module(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"celeryconfig_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text(CONFIG_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_config_from_a_module_by_name(config_module: str) -> None:
    app = GopherQ("config")
    app.config_from_object(config_module)
    assert app.broker_url == "memory://"
    assert app.settings.result_expires == 60.0
    assert app.settings.default_queue == "default"
    app.config_from_object(f"{config_module}:Config")  # a class in it, by name
    assert (app.settings.default_queue, app.settings.max_deliveries) == ("work", 2)
    assert app.settings.result_expires == 60.0  # what the first call set stays
    app.config_from_object(f"{config_module}.Config")  # the dotted form too

    @app.task(name="mail.send")
    def send() -> None:
        pass

    @app.task(name="report")
    def report() -> None:
        pass

    assert (send.options.queue, report.options.queue) == ("mail", "work")


def test_config_from_an_object_or_a_mapping() -> None:
    class Settings:
        eager = True
        prefetch = 4
        helper = "passed over"

    app = GopherQ("config", broker="memory://")
    app.config_from_object(Settings)
    assert app.settings.eager and app.settings.prefetch == 4
    app.config_from_object({"prefetch": 8})
    assert app.settings.prefetch == 8


def test_config_with_a_namespace() -> None:
    django_like = {"CELERY_EAGER": True, "CELERY_PREFETCH": 2, "DEBUG": True, "INSTALLED": []}
    app = GopherQ("config", broker="memory://")
    app.config_from_object(type("S", (), django_like), namespace="CELERY")
    assert app.settings.eager and app.settings.prefetch == 2
    with pytest.raises(ConfigurationError, match="unknown setting 'nope'"):
        app.config_from_object({"CELERY_NOPE": 1}, namespace="CELERY")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"brokr_url": "memory://"}, "did you mean 'broker_url'"),
        ({"anything": 1}, "unknown setting 'anything'"),  # a mapping holds settings only
        ({"task_always_eager": True}, "'task_always_eager' is Celery's: gopherq has eager"),
        (type("C", (), {"worker_concurrency": 2}), "gopherq has concurrency"),
        (type("C", (), {"prefetc": 2}), "did you mean 'prefetch'"),  # close to a setting
        ({"prefetch": "many"}, "setting 'prefetch' must be int"),
        ("no_such_module_here", "cannot import settings from 'no_such_module_here'"),
        ("os:no_such_attr", "no 'no_such_attr'"),
        (type("C", (), {"CELERY_BROKER_URL": "x"}), "pass namespace='CELERY'"),
    ],
)
def test_config_errors_name_the_setting(source: Any, message: str) -> None:
    app = GopherQ("config", broker="memory://")
    with pytest.raises(ConfigurationError, match=message):
        app.config_from_object(source)
    assert app.settings.prefetch == 16  # nothing was applied


def test_environment_still_wins_over_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPHERQ_PREFETCH", "3")
    app = GopherQ("config", broker="memory://")
    app.config_from_object({"prefetch": 8, "max_deliveries": 9})
    assert (app.settings.prefetch, app.settings.max_deliveries) == (3, 9)


def test_config_after_connecting_refuses_what_cannot_change(app: GopherQ) -> None:
    app.broker.stats()  # connected
    with pytest.raises(ConfigurationError, match="broker_url can no longer change"):
        app.config_from_object({"broker_url": "sqlite:///elsewhere.db"})
    app.config_from_object({"prefetch": 2})  # read when used: still fine
    assert app.settings.prefetch == 2

    @app.task
    def f() -> None:
        pass

    with pytest.raises(ConfigurationError, match="task_routes can no longer change"):
        app.config_from_object({"task_routes": {"*": "all"}})


def test_config_switches_events_and_the_beat_schedule() -> None:
    app = GopherQ("config", broker="memory://", events=False, tracing=False)
    assert not app.events.enabled and not app.middleware
    app.config_from_object({"events": "memory://"})
    assert app.events.enabled and len(app.middleware) == 1
    app.config_from_object({"events": False})
    assert not app.events.enabled and not app.middleware

    @app.task(name="report")
    def report() -> None:
        pass

    app.config_from_object({"beat_schedule": {"nightly": {"task": "report", "every": 60}}})
    app.config_from_object({"beat_schedule": {"hourly": {"task": "report", "every": 3600}}})
    names = {info.entry.name for info in app.schedules.list()}
    assert names == {"hourly"}


# Settings.


def test_celery_setting_names_say_what_gopherq_has(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="gopherq has default_queue"):
        GopherQ("settings", task_default_queue="q")
    with pytest.raises(ConfigurationError, match="did you mean 'broker_url'"):
        GopherQ("settings", brokerurl="memory://")


def test_celery_app_and_task_attributes_say_what_gopherq_has(app: GopherQ) -> None:
    @app.task
    def f() -> None:
        pass

    with pytest.raises(AttributeError, match="gopherq has settings"):
        app.conf  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match=r"gopherq has options\.retries"):
        f.max_retries  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="'Task' object has no attribute 'nope'"):
        f.nope  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(app, "nope")


def test_config_silent_passes_over_a_missing_module() -> None:
    app = GopherQ("config", broker="memory://")
    app.config_from_object("no_such_config_module", silent=True)
    assert app.settings.prefetch == 16


def test_beat_event_queue_follows_routes() -> None:
    from gopherq.beat import Beat
    from gopherq.schedules import Entry

    app = GopherQ("routes", broker="memory://", task_routes={"remote.*": "remote"})
    entry = Entry(name="n", task="remote.report", every=60)
    assert Beat(app)._queue(entry) == "remote"


def test_a_bound_function_registers_again_as_the_same_task(app: GopherQ) -> None:
    def describe(self: TaskContext) -> str:
        return self.name

    first = app.task(bind=True, name="describe")(describe)
    second = app.task(bind=True, name="describe")(describe)  # a module imported twice
    assert second.name == first.name == "describe"
    with pytest.raises(ConfigurationError, match="already registered"):

        @app.task(bind=True, name="describe")
        def other(self: TaskContext) -> str:
            return ""
