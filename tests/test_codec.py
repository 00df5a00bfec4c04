"""The msgpack codec and the message envelope."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import msgpack
import pytest

from gopherq.errors import DecodeError, PayloadTooLarge, SerializationError
from gopherq.message import DEFAULT_PRIORITY, DEFAULT_QUEUE, Message, new_id
from gopherq.serializer import MAX_DEPTH, Codec

codec = Codec()


def raw(mapping: Any) -> bytes:
    """Plain msgpack, as another producer would write it."""
    data: bytes = msgpack.packb(mapping, use_bin_type=True)
    return data


def envelope(**fields: Any) -> dict[str, Any]:
    return {"v": 1, "id": "t-1", "task": "app.add", **fields}


# Values.

AWARE = dt.datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5)))


@pytest.mark.parametrize(
    "value",
    [
        AWARE,
        dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 1, 12, 30, 15, 5),
        dt.date(2024, 2, 29),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        decimal.Decimal("-12.3400"),
        decimal.Decimal("1E+30"),
        b"\x00\xff raw",
        "text é 字",
        [1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, True, None],
        {"nested": {"list": [{"d": dt.date(2000, 1, 1)}], 1: "int key"}},
    ],
    ids=repr,
)
def test_values_round_trip(value: Any) -> None:
    back = codec.unpack(codec.pack(value))
    assert back == value
    assert type(back) is type(value)


def test_aware_datetime_keeps_its_offset() -> None:
    back = codec.unpack(codec.pack(AWARE))
    assert back == AWARE
    assert back.utcoffset() == dt.timedelta(hours=5)
    assert back.tzinfo is not None


def test_naive_datetime_stays_naive() -> None:
    naive = dt.datetime(2024, 3, 1, 12)
    assert codec.unpack(codec.pack(naive)).tzinfo is None


def test_tuples_come_back_as_lists() -> None:
    assert codec.unpack(codec.pack((1, (2, 3)))) == [1, [2, 3]]


def test_tuple_map_keys_come_back_as_tuples() -> None:
    value = {(1, ("a", 2)): [(3, 4)], "plain": {(5,): None}}
    assert codec.unpack(codec.pack(value)) == {(1, ("a", 2)): [[3, 4]], "plain": {(5,): None}}
    message = Message(new_id(), "app.add", kwargs={"grid": {(0, 1): "x"}})
    assert codec.decode(codec.encode(message)).kwargs == {"grid": {(0, 1): "x"}}


# Encoding errors.


def test_serialization_error_names_the_argument_path() -> None:
    message = Message(new_id(), "app.add", args=[1, {"a": [object()]}])
    with pytest.raises(SerializationError, match=r"args\[1\]\['a'\]\[0\]: cannot encode object"):
        codec.encode(message)


def test_serialization_error_in_kwargs_and_headers() -> None:
    with pytest.raises(SerializationError, match=r"kwargs\['when'\]: sets are not supported"):
        codec.encode(Message(new_id(), "t", kwargs={"when": {1, 2}}))
    with pytest.raises(SerializationError, match=r"headers\['x'\]"):
        codec.encode(Message(new_id(), "t", headers={"x": object()}))


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ([object()], "value[0]", "cannot encode object"),
        ({"n": 2**64}, "value['n']", "integer out of the 64-bit range"),
        ({"s": frozenset()}, "value['s']", "sets are not supported; pass a list"),
    ],
)
def test_pack_names_the_bad_part(value: Any, path: str, reason: str) -> None:
    with pytest.raises(SerializationError) as info:
        codec.pack(value)
    assert str(info.value) == f"cannot serialize {path}: {reason}"


def test_payload_too_large() -> None:
    small = Codec(max_message_size=200)
    small.encode(Message("t-1", "app.add", args=["x" * 50], created=1.0))
    with pytest.raises(PayloadTooLarge) as info:
        small.encode(Message("t-1", "app.add", args=["x" * 500]))
    assert info.value.limit == 200
    assert info.value.size > 500
    assert "max_message_size" in str(info.value)


def test_payload_too_large_is_a_serialization_error() -> None:
    assert issubclass(PayloadTooLarge, SerializationError)
    assert issubclass(DecodeError, SerializationError)


# Messages.


def test_message_round_trip_of_every_field() -> None:
    message = Message(
        id=new_id(),
        task="app.add",
        args=[1, AWARE, b"\x01"],
        kwargs={"price": decimal.Decimal("9.99"), "user": uuid.uuid4()},
        queue="billing",
        priority=0,
        eta=1_700_000_000.5,
        expires=1_700_000_100.0,
        attempt=2,
        retries=5,
        timeout=30.0,
        key="order-7",
        deps=["a", "b"],
        parent="p",
        root="r",
        group="g",
        headers={"traceparent": "00-abc-def-01"},
        created=1_699_999_999.0,
    )
    assert codec.decode(codec.encode(message)) == message


def test_defaults_are_left_out_of_the_wire() -> None:
    message = Message("t-1", "app.add", created=5.0)
    assert codec.unpack(codec.encode(message)) == envelope(created=5.0)


def test_minimal_envelope_from_another_producer() -> None:
    message = codec.decode(raw(envelope()))
    assert (message.id, message.task) == ("t-1", "app.add")
    assert (message.args, message.kwargs, message.headers) == ([], {}, {})
    assert (message.queue, message.priority, message.attempt) == (
        DEFAULT_QUEUE,
        DEFAULT_PRIORITY,
        0,
    )
    assert (message.eta, message.key, message.deps) == (None, None, None)
    assert message.created == 0.0


def test_nil_fields_mean_their_defaults() -> None:
    message = codec.decode(raw(envelope(priority=None, kwargs=None, eta=None, queue=None)))
    assert (message.priority, message.kwargs, message.queue) == (DEFAULT_PRIORITY, {}, "default")


def test_new_ids_are_unique_and_sortable() -> None:
    ids = [new_id() for _ in range(100)]
    assert len(set(ids)) == 100
    assert ids == sorted(ids)


# Decoding errors: each a DecodeError with its reason.


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1", "not valid msgpack: the reserved byte 0xc1, which starts no msgpack value"),
        (b"\x91\xc1", "not valid msgpack: the reserved byte 0xc1"),
        (b"\x92\x01", "not valid msgpack"),
        (b"", "not valid msgpack"),
        (raw(envelope()) + b"\x00", "not valid msgpack"),
        (raw([1, 2]), "envelope must be a map"),
        (raw(envelope(v=2)), "unsupported envelope version 2"),
        (raw({"id": "x", "task": "t"}), "unsupported envelope version None"),
        (raw({"v": 1, "task": "t"}), "'id' is missing"),
        (raw({"v": 1, "id": "x"}), "'task' is missing"),
        (raw(envelope(args={"a": 1})), "'args' has type dict"),
        (raw(envelope(kwargs=[1])), "'kwargs' has type list"),
        (raw(envelope(kwargs={1: 2})), "'kwargs' has a key that is not a string"),
        (raw(envelope(priority="high")), "'priority' has type str"),
        (raw(envelope(priority=True)), "'priority' has type bool"),
        (raw(envelope(priority=7)), "'priority' is out of range"),
        (raw(envelope(eta="soon")), "'eta' has type str"),
        (raw(envelope(id=5)), "'id' has type int"),
        (raw(envelope(surprise=1)), "unknown envelope fields: surprise"),
        (raw(msgpack.ExtType(42, b"x")), "unknown msgpack extension type 42"),
        (raw(msgpack.ExtType(4, b"short")), "malformed extension value (code 4)"),
        (raw(msgpack.ExtType(1, b"not a date")), "malformed extension value (code 1)"),
        (raw(msgpack.ExtType(5, b"\xff")), "malformed extension value (code 5)"),
    ],
)
def test_decode_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert reason in str(info.value)


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_depth_is_bounded() -> None:
    assert codec.unpack(codec.pack(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    with pytest.raises(DecodeError, match="nesting deeper"):
        codec.unpack(raw(nested(MAX_DEPTH + 1)))
    with pytest.raises(DecodeError, match="not valid msgpack: values nested too deeply"):
        codec.unpack(b"\x91" * 100_000)  # far deeper than msgpack's own limit


def test_decode_rejects_input_above_the_size_limit() -> None:
    small = Codec(max_message_size=100)
    with pytest.raises(DecodeError, match="above the limit"):
        small.decode(raw(envelope(args=["x" * 200])))


def test_decode_reports_the_first_bad_field_in_envelope_order() -> None:
    with pytest.raises(DecodeError, match="'id' is missing"):
        codec.decode(raw({"priority": "high", "task": 5, "v": 1}))
    with pytest.raises(DecodeError, match="'task' has type int"):
        codec.decode(raw({"priority": "high", "task": 5, "id": "x", "v": 1}))


def test_nesting_depth_counts_maps_too() -> None:
    def nested_maps(depth: int, leaf: Any) -> Any:
        for i in range(depth):
            leaf = [leaf] if i % 2 else {"k": leaf, "flat": 1}
        return leaf

    assert codec.unpack(codec.pack(nested_maps(MAX_DEPTH, 0))) == nested_maps(MAX_DEPTH, 0)
    assert codec.unpack(raw(nested_maps(MAX_DEPTH, {}))) == nested_maps(MAX_DEPTH, {})
    with pytest.raises(DecodeError, match="nesting deeper"):
        codec.unpack(raw(nested_maps(MAX_DEPTH, {"k": 0})))
    with pytest.raises(DecodeError, match="nesting deeper"):
        codec.unpack(raw(nested_maps(MAX_DEPTH + 1, 0)))


def test_peek_field_reads_one_field_and_skips_the_rest() -> None:
    body = codec.encode(Message(id=new_id(), task="shop.send", args=[{"deep": [1, 2]}] * 50))
    assert codec.peek_field(body, "task") == "shop.send"
    assert codec.peek_field(body, "args") == [{"deep": [1, 2]}] * 50
    assert codec.peek_field(body, "missing") is None
    foreign = raw({"args": [[[[[]]]]] * 3, "kwargs": {"a": 1}, "task": "other.task"})
    assert codec.peek_field(foreign, "task") == "other.task"


@pytest.mark.parametrize(
    "body",
    [b"", b"\xc1", raw([1, 2]), raw("text"), raw({"task": 1})[:-1], b"\x91" * 100_000],
    ids=["empty", "invalid", "array", "string", "truncated", "deep"],
)
def test_peek_field_of_an_unreadable_body_is_none(body: bytes) -> None:
    assert codec.peek_field(body, "task") is None
