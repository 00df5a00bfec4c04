"""Envelope bounds: every field limited at decode, the same limits at send time,
non-finite numbers refused, the ``max_eta`` horizon and msgpack's Timestamp
extension."""

from __future__ import annotations

import datetime as dt
import math
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from gopherq import ConfigurationError, GopherQ, State
from gopherq.brokers import Envelope
from gopherq.errors import DecodeError
from gopherq.message import (
    MAX_COUNT,
    MAX_DEPS,
    MAX_HEADER_KEY,
    MAX_HEADERS,
    MAX_HEADERS_SIZE,
    MAX_ID,
    MAX_KEY,
    MAX_QUEUE,
    MAX_TASK_NAME,
    MAX_TIMESTAMP,
    Message,
    new_id,
)
from gopherq.schedules.entry import MAX_NAME
from gopherq.serializer import Codec
from gopherq.worker import Consumer, Exit

codec = Codec()


def raw(mapping: Any) -> bytes:
    """Plain msgpack, as another producer would write it."""
    data: bytes = msgpack.packb(mapping, use_bin_type=True)
    return data


def envelope(**fields: Any) -> dict[str, Any]:
    return {"v": 1, "id": "t-1", "task": "app.add", "created": 1_700_000_000.0, **fields}


def decode_error(**fields: Any) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(raw(envelope(**fields)))
    return str(info.value)


# Text fields: at the limit decodes, one above does not.

TEXT_LIMITS = [
    ("id", MAX_ID),
    ("task", MAX_TASK_NAME),
    ("queue", MAX_QUEUE),
    ("key", MAX_KEY),
    ("parent", MAX_ID),
    ("root", MAX_ID),
    ("group", MAX_ID),
]


@pytest.mark.parametrize(("field", "limit"), TEXT_LIMITS)
def test_text_fields_are_bounded(field: str, limit: int) -> None:
    message = codec.decode(raw(envelope(**{field: "x" * limit})))
    assert getattr(message, field) == "x" * limit
    error = decode_error(**{field: "x" * (limit + 1)})
    assert error == (
        f"envelope field {field!r} is {limit + 1} characters long, above the limit of {limit}"
    )


def test_the_limits_are_sane() -> None:
    assert (MAX_ID, MAX_TASK_NAME, MAX_QUEUE, MAX_KEY) == (128, 256, 128, 256)
    assert (MAX_HEADERS, MAX_HEADERS_SIZE) == (64, 16 * 1024)


def test_a_40_kb_task_name_is_refused_without_echoing_it() -> None:
    error = decode_error(task="t" * 40_000)
    assert "'task' is 40000 characters long" in error
    assert len(error) < 200


@pytest.mark.parametrize("field", ["id", "task", "queue"])
def test_id_task_and_queue_may_not_be_empty(field: str) -> None:
    assert decode_error(**{field: ""}) == f"envelope field {field!r} is empty"


def test_lengths_count_characters() -> None:
    assert codec.decode(raw(envelope(task="é" * MAX_TASK_NAME))).task == "é" * MAX_TASK_NAME


# Containers.


def test_deps_are_bounded_in_count_and_each_id() -> None:
    ids = [f"id-{i}" for i in range(MAX_DEPS)]
    assert codec.decode(raw(envelope(deps=ids))).deps == ids
    assert "'deps' holds 1001 ids, above the limit of 1000" in decode_error(deps=[*ids, "one"])
    assert "'deps' holds an id that is not a string" in decode_error(deps=["a", 5])
    assert "'deps' holds an id that is not a string" in decode_error(deps=["x" * (MAX_ID + 1)])
    assert "'deps' holds an id that is not a string" in decode_error(deps=[""])


def test_headers_are_bounded_in_count_names_and_size() -> None:
    many = {f"h{i}": "v" for i in range(MAX_HEADERS)}
    assert codec.decode(raw(envelope(headers=many))).headers == many
    error = decode_error(headers={**many, "one-more": "v"})
    assert "'headers' holds 65 headers, above the limit of 64" in error
    long_name = "n" * (MAX_HEADER_KEY + 1)
    assert "'headers' has a name that is not a string" in decode_error(headers={long_name: 1})
    assert "'headers' has a name that is not a string" in decode_error(headers={5: 1})
    assert "'headers' has a name that is not a string" in decode_error(headers={"": 1})
    big = {"a": "x" * MAX_HEADERS_SIZE}
    assert "bytes of msgpack, above the limit of 16384" in decode_error(headers=big)
    fits = {"a": "x" * (MAX_HEADERS_SIZE - 100)}
    assert codec.decode(raw(envelope(headers=fits))).headers == fits


def test_header_size_counts_extension_values() -> None:
    headers = {f"h{i}": [dt.date(2024, 1, 1)] * 100 for i in range(30)}  # 10 bytes each
    with pytest.raises(DecodeError, match="'headers' is"):
        codec.decode(codec.encode(Message("t-1", "app.add", headers=headers)))


# Numbers: non-finite and out of range.

NUMBER_FIELDS = ["eta", "expires", "timeout", "created"]


@pytest.mark.parametrize("field", NUMBER_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(field: str, value: float) -> None:
    error = decode_error(**{field: value})
    assert error == f"envelope field {field!r} is not a finite number: {value!r}"


@pytest.mark.parametrize("field", NUMBER_FIELDS)
def test_times_are_bounded(field: str) -> None:
    assert getattr(codec.decode(raw(envelope(**{field: MAX_TIMESTAMP}))), field) == MAX_TIMESTAMP
    assert "is out of range" in decode_error(**{field: MAX_TIMESTAMP + 1})
    below = "must be a positive number" if field == "timeout" else "is out of range"
    assert below in decode_error(**{field: -1.0})
    assert "is out of range" in decode_error(**{field: 2**64 - 1})


@pytest.mark.parametrize("value", [0, 0.0, -0.0])
def test_a_hard_time_limit_of_zero_is_refused(value: float) -> None:
    """It would have the supervisor kill the process at once: not a limit anyone means."""
    error = decode_error(timeout=value)
    assert error == f"envelope field 'timeout' must be a positive number of seconds, not {value!r}"
    assert codec.decode(raw(envelope(timeout=0.001))).timeout == 0.001


@pytest.mark.parametrize("field", ["attempt", "retries"])
@pytest.mark.parametrize("value", [-1, MAX_COUNT + 1, 2**64 - 1, -(2**63)])
def test_counts_are_bounded(field: str, value: int) -> None:
    error = decode_error(**{field: value})
    assert error == f"envelope field {field!r} is out of range 0-{MAX_COUNT}: {value}"


@pytest.mark.parametrize("field", ["attempt", "retries"])
def test_counts_at_their_limits_decode(field: str) -> None:
    for value in (0, MAX_COUNT):
        assert getattr(codec.decode(raw(envelope(**{field: value}))), field) == value


def test_the_first_bad_field_is_reported_in_envelope_order() -> None:
    error = decode_error(created=math.nan, task="t" * 300, retries=-1)
    assert error.startswith("envelope field 'task'")


# msgpack's Timestamp extension (code -1), built by hand as JavaScript sends it.


def timestamp_ext(seconds: int, nanoseconds: int = 0) -> bytes:
    if nanoseconds == 0 and 0 <= seconds < 2**32:
        return b"\xd6\xff" + struct.pack(">I", seconds)  # fixext 4
    if 0 <= seconds < 2**34:
        return b"\xd7\xff" + struct.pack(">Q", nanoseconds << 34 | seconds)  # fixext 8
    return b"\xc7\x0c\xff" + struct.pack(">Iq", nanoseconds, seconds)  # ext 8, 12 bytes


def test_timestamp_extension_decodes_to_an_aware_utc_datetime() -> None:
    expected = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
    for data in (timestamp_ext(1_700_000_000), timestamp_ext(1_700_000_000, 0)):
        value = codec.unpack(data)
        assert value == expected
        assert value.tzinfo is dt.UTC
    with_nanos = codec.unpack(timestamp_ext(1_700_000_000, 123_456_789))
    assert with_nanos == expected.replace(microsecond=123456)
    assert codec.unpack(timestamp_ext(-1)) == dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


def test_timestamp_extension_anywhere_in_a_message() -> None:
    when = timestamp_ext(1_700_000_000)
    # {"v":1,"id":"t-1","task":"app.add","args":[<ts>],"kwargs":{"at":<ts>},"headers":{"sent":<ts>}}
    body = (
        b"\x86"
        + raw("v")
        + raw(1)
        + raw("id")
        + raw("t-1")
        + raw("task")
        + raw("app.add")
        + raw("args")
        + b"\x91"
        + when
        + raw("kwargs")
        + b"\x81"
        + raw("at")
        + when
        + raw("headers")
        + b"\x81"
        + raw("sent")
        + when
    )
    message = codec.decode(body)
    expected = dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)
    assert message.args == [expected]
    assert message.kwargs == {"at": expected}
    assert message.headers == {"sent": expected}
    assert all(isinstance(v, dt.datetime) for v in (message.args[0], message.kwargs["at"]))


@pytest.mark.parametrize(
    "data",
    [
        b"\xc7\x05\xff12345",  # no Timestamp is 5 bytes long
        b"\xc7\x0c\xff" + struct.pack(">Iq", 2_000_000_000, 0),  # nanoseconds above 999999999
        b"\xc7\x0c\xff" + struct.pack(">Iq", 0, 2**62),  # past what a datetime holds
    ],
)
def test_malformed_timestamps_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.unpack(data)


# The same limits at send time: a clear error, never a dead letter.


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("t", broker="memory://")


def test_task_names_and_queues_over_their_limits_fail_at_declaration(app: GopherQ) -> None:
    with pytest.raises(ConfigurationError, match="task name is 257 characters long"):
        app.task(name="n" * 257)(lambda: None)
    with pytest.raises(ConfigurationError, match="task queue is 129 characters long"):
        app.task(queue="q" * 129)(lambda: None)
    with pytest.raises(ConfigurationError, match="task name is 40000 characters long"):
        app.send_task("n" * 40_000)
    long_default = GopherQ("t", broker="memory://", default_queue="d" * 200)
    with pytest.raises(ConfigurationError, match="task queue is 200 characters long"):
        long_default.task(lambda: None)
    assert app.broker.reserve(["default"], 10, 0) == []  # nothing was sent


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"queue": "q" * 129}, "send option queue is 129 characters long"),
        ({"key": "k" * 257}, "send option key is 257 characters long"),
        ({"task_id": "i" * 129}, "send option task_id is 129 characters long"),
        ({"retries": -1}, "send option retries is out of range"),
        ({"retries": 2**40}, "send option retries is out of range"),
        ({"timeout": math.nan}, "send option timeout is not a finite number"),
        ({"timeout": math.inf}, "send option timeout is not a finite number"),
        ({"headers": {"x": "y" * 20_000}}, "send option headers is"),
        ({"headers": {f"h{i}": 1 for i in range(65)}}, "send option headers holds 65"),
        ({"eta": math.nan}, "eta is not a finite number"),
        ({"eta": math.inf}, "eta is not a finite number"),
        ({"countdown": math.nan}, "countdown is not a finite number"),
        ({"countdown": -math.inf}, "countdown is not a finite number"),
        ({"expires": math.nan}, "expires is not a finite number"),
        ({"expires": math.inf}, "expires is not a finite number"),
        ({"expires": 1e12}, "expires is past the year 9999"),
        ({"countdown": 366 * 86400}, "eta is 31622400 seconds away, beyond the max_eta"),
        ({"eta": dt.datetime.now(dt.UTC) + dt.timedelta(days=400)}, "beyond the max_eta"),
    ],
)
def test_send_options_out_of_bounds_fail_at_send(
    app: GopherQ, options: dict[str, Any], error: str
) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ValueError, match=error):
        add.apply_async((1, 2), **options)
    assert app.broker.reserve(["default", "q" * 129], 10, 0) == []  # nothing was written


def test_an_eta_within_max_eta_is_sent(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async((1, 2), countdown=364 * 86400)
    add.apply_async((1, 2), eta=dt.datetime(1900, 1, 1, tzinfo=dt.UTC))  # past: runs now
    short = GopherQ("t", broker="memory://", max_eta=60)
    short.send_task("x", countdown=59)
    with pytest.raises(ValueError, match="beyond the max_eta setting of 60"):
        short.send_task("x", countdown=61)


@pytest.mark.parametrize("option", ["expires", "timeout", "retry_delay"])
def test_non_finite_task_options_fail_at_declaration(app: GopherQ, option: str) -> None:
    with pytest.raises(ConfigurationError, match="finite"):
        app.task(**{option: math.inf})(lambda: None)


def test_periodic_entries_over_the_limits_fail_at_declaration(app: GopherQ) -> None:
    assert MAX_NAME == 238  # "beat:" + name + ":" + a tick of 12 digits fits MAX_KEY
    app.add_periodic("tasks.report", every=60, name="n" * MAX_NAME)
    with pytest.raises(ConfigurationError, match="name is 239 characters long"):
        app.add_periodic("tasks.report", every=60, name="n" * (MAX_NAME + 1))
    with pytest.raises(ConfigurationError, match="queue is 129 characters long"):
        app.add_periodic("tasks.report", every=60, name="q", queue="q" * 129)
    with pytest.raises(ConfigurationError, match="task is 257 characters long"):
        app.add_periodic("t" * 257, every=60, name="t")


# Through a real consumer: dead-lettered DECODE_ERROR, and the consumer goes on.


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_consumer_dead_letters_messages_over_the_limits(kind: str, tmp_path: Path) -> None:
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'q.db'}"
    app = GopherQ("t", broker=url)

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    planted = {}
    for fields, error in [
        ({"task": "t" * 40_000}, "'task' is 40000 characters long"),
        ({"created": math.nan}, "'created' is not a finite number: nan"),
        ({"eta": math.inf}, "'eta' is not a finite number: inf"),
        ({"attempt": -1}, "'attempt' is out of range"),
        ({"headers": {f"h{i}": 1 for i in range(100)}}, "'headers' holds 100 headers"),
    ]:
        id = new_id()
        body = raw({"v": 1, "id": id, "task": "tasks.add", "args": [1, 2], **fields})
        app.broker.enqueue([Envelope(id, "default", 2, body)])
        planted[id] = error
    result = add.delay(2, 3)
    consumer = Consumer(app, ["default"], burst=True, reserve_timeout=0.2)
    assert consumer.run() is Exit.DRAINED
    assert result.get(timeout=5) == 5
    letters = {letter.id: letter for letter in app.broker.dead_letters()}
    assert set(letters) == set(planted)
    for id, error in planted.items():
        assert letters[id].reason == "DECODE_ERROR"
        assert error in letters[id].error
        assert app.result(id).state is State.DEAD
    app.close()


@pytest.mark.parametrize("option", ["timeout", "soft_timeout", "time_limit"])
def test_a_task_time_limit_of_zero_is_refused(option: str) -> None:
    app = GopherQ("t", broker="memory://")
    with pytest.raises(ConfigurationError, match="must be positive"):
        app.task(**{option: 0})(lambda: None)
