"""Unique tasks and idempotency keys as the app sends them: derived keys, how long the
broker is told to hold them, and the options refused (on the memory broker)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from gopherq import GopherQ
from gopherq.errors import ConfigurationError
from gopherq.uniqueness import DEFAULT_KEY_TTL


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("uniq", broker="memory://")


def finish_all(app: GopherQ) -> None:
    """Take every ready message of the default queue and ack it, as a worker would."""
    app.broker.ack(app.broker.reserve(["default"], 100, 0))


def test_a_unique_task_derives_its_key_from_name_and_arguments(app: GopherQ) -> None:
    @app.task(unique=True)
    def report(day: str, *, kind: str = "full", pages: int = 1) -> None: ...

    @app.task(unique=True)
    def other(day: str, *, kind: str = "full", pages: int = 1) -> None: ...

    def key(task: Any, *args: Any, **kwargs: Any) -> str | None:
        return app.envelope(task.s(*args, **kwargs)).key

    same = key(report, "mon", kind="x", pages=2)
    assert same is not None and len(same) == 32
    assert key(report, "mon", pages=2, kind="x") == same  # keyword order does not count
    assert key(report, "tue", kind="x", pages=2) != same
    assert key(report, "mon", kind="x", pages=3) != same
    assert key(other, "mon", kind="x", pages=2) != same  # the task name counts
    explicit = app.envelope(report.s("mon").set(key="mine"))
    assert explicit.key == "mine"  # an explicit key wins


def test_a_plain_task_sends_no_key(app: GopherQ) -> None:
    plain = app.task(lambda: None)
    envelope = app.envelope(plain.s())
    assert (envelope.key, envelope.key_ttl, envelope.key_until_start) == (None, None, False)
    # A key_ttl alone asks for nothing.
    assert app.envelope(plain.s().set(key_ttl=60)).key_ttl is None


def test_unique_sends_share_one_job_until_it_finishes_and_for_its_ttl(app: GopherQ) -> None:
    @app.task(unique=True)
    def add(x: int, y: int) -> int:
        return x + y

    first = add.delay(1, 2)
    assert add.delay(1, 2).id == first.id
    assert add.delay(2, 1).id != first.id
    finish_all(app)
    assert add.delay(1, 2).id == first.id  # finished: held for key_ttl
    assert app.broker.reserve(["default"], 10, 0) == []


@pytest.mark.parametrize(
    ("declared", "sent", "expected"),
    [
        ({}, {}, (DEFAULT_KEY_TTL, False)),
        ({"key_ttl": 60}, {}, (60.0, False)),
        ({"key_ttl": dt.timedelta(minutes=2)}, {"key_ttl": 30}, (30.0, False)),
        ({}, {"key_ttl": dt.timedelta(hours=1)}, (3600.0, False)),
        ({}, {"key_ttl": 0}, (None, False)),
        ({"unique_until": "finish"}, {"key_ttl": 60}, (None, False)),
        ({"unique_until": "start"}, {}, (None, True)),
        ({}, {"key_ttl": 10 * 86400}, (7 * 86400.0, False)),  # capped: result_expires
    ],
)
def test_how_long_the_broker_holds_a_key(
    declared: dict[str, Any], sent: dict[str, Any], expected: tuple[Any, bool]
) -> None:
    app = GopherQ("uniq", broker="memory://", result_expires=7 * 86400.0)
    task = app.task(**declared)(lambda: None)
    envelope = app.envelope(task.s().set(key="k", **sent))
    assert (envelope.key_ttl, envelope.key_until_start) == expected


def test_unique_until_start_frees_the_key_when_the_job_starts(app: GopherQ) -> None:
    @app.task(unique=True, unique_until="start")
    def sync(account: int) -> None: ...

    first = sync.delay(7)
    assert sync.delay(7).id == first.id
    [started] = app.broker.reserve(["default"], 1, 0)
    second = sync.delay(7)  # one may wait while one runs
    assert second.id != first.id
    app.broker.ack([started])
    assert sync.delay(7).id == second.id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"unique_until": "soon"},
            "task option unique_until must be one of 'start', 'finish', 'ttl', not 'soon'",
        ),
        ({"unique": "yes"}, "task option unique takes True or False, not 'yes'"),
        ({"key_ttl": -1}, "task option key_ttl must be a finite number of seconds, 0 or more"),
        ({"key_ttl": float("inf")}, "task option key_ttl must be a finite number"),
        ({"key_ttl": "1h"}, "task option key_ttl takes a number of seconds or a timedelta"),
    ],
)
def test_bad_task_options_are_refused_in_one_line(
    app: GopherQ, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match="^" + re.escape(message)) as info:
        app.task(**options)(lambda: None)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [-5, float("nan"), "1h", True])
def test_a_bad_key_ttl_send_option_sends_nothing(app: GopherQ, value: Any) -> None:
    task = app.task(lambda: None)
    with pytest.raises(ValueError, match=r"^send option key_ttl ") as info:
        task.apply_async(key="k", key_ttl=value)
    assert "\n" not in str(info.value)
    assert app.broker.reserve(["default"], 10, 0) == []


def test_unencodable_arguments_of_a_unique_task_raise_as_a_send_does(app: GopherQ) -> None:
    from gopherq.errors import SerializationError

    task = app.task(unique=True)(lambda value: None)
    with pytest.raises(SerializationError, match="cannot serialize"):
        task.delay(object())
