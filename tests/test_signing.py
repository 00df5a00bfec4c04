"""Message signing: the wire format, key rotation, configuration, and a real
consumer dead-lettering what is not validly signed as ``SIGNATURE_INVALID``."""

from __future__ import annotations

import datetime as dt
import hmac
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from gopherq import ConfigurationError, DeadReason, GopherQ, SignatureError, State
from gopherq.admin import dead_letters
from gopherq.brokers import Envelope
from gopherq.errors import DecodeError, PayloadTooLarge
from gopherq.message import Message, new_id
from gopherq.serializer import Codec
from gopherq.settings import Settings
from gopherq.signing import SignedCodec, Signer, codec_for
from gopherq.worker import Consumer, Exit

K1 = b"k1-secret-0123456789abcdef012345"
K2 = "k2 secret as text, 32 characters"

# Made by JavaScript (@msgpack/msgpack 3 on Node 20): an envelope whose args,
# kwargs and headers hold a Date (msgpack's Timestamp extension), signed with
# key "js" = b"a-secret-of-at-least-16-bytes" by node:crypto's HMAC-SHA256.
JS_ENVELOPE = bytes.fromhex(
    "87a17601a26964a46a732d31a47461736baa7461736b732e7768656ea46172677391d7ff3b9aca00"
    "65e1ca57a66b776172677381a26174d7ff3b9aca0065e1ca57a76865616465727381a473656e74d7"
    "ff3b9aca0065e1ca57a763726561746564cb41d954fc40200000"
)
JS_SIGNED = (
    bytes.fromhex(
        "94a667712d736967a26a73c420f5ff4320a15b74d807255ffbc23a238ce86d83a9b173e9cf35957e"
        "07c8c0d1e1c46a"
    )
    + JS_ENVELOPE
)
JS_KEY = b"a-secret-of-at-least-16-bytes"


def signed_codec(keys: dict[str, Any], signing_key: str | None = None) -> SignedCodec:
    return SignedCodec(Signer(keys, signing_key))


def message(**fields: Any) -> Message:
    return Message(new_id(), "tasks.add", **{"args": [1, 2], "created": 1_700_000_000.0, **fields})


# The wire format.


def test_round_trip_and_wire_format() -> None:
    codec = signed_codec({"k1": K1})
    sent = message(kwargs={"when": dt.date(2024, 1, 1)})
    body = codec.encode(sent)
    tag, kid, mac, envelope = msgpack.unpackb(body)
    assert (tag, kid) == ("gq-sig", "k1")
    assert envelope == Codec().encode(sent)  # the envelope exactly as unsigned
    assert mac == hmac.digest(K1, envelope, "sha256")
    assert codec.decode(body) == sent


def test_a_foreign_producer_signs_in_a_few_lines() -> None:
    envelope = msgpack.packb({"v": 1, "id": "x-1", "task": "tasks.add", "args": [2, 3]})
    body = msgpack.packb(["gq-sig", "k2", hmac.digest(K2.encode(), envelope, "sha256"), envelope])
    decoded = signed_codec({"k1": K1, "k2": K2}, "k1").decode(body)
    assert (decoded.id, decoded.task, decoded.args) == ("x-1", "tasks.add", [2, 3])


def test_a_javascript_producer_with_dates() -> None:
    when = dt.datetime(2024, 3, 1, 12, 30, 15, 250000, tzinfo=dt.UTC)
    for decoded in (
        signed_codec({"js": JS_KEY}).decode(JS_SIGNED),
        Codec().decode(JS_ENVELOPE),
    ):
        assert decoded.args == [when]
        assert decoded.kwargs == {"at": when}
        assert decoded.headers == {"sent": when}
        assert decoded.args[0].tzinfo is dt.UTC


def sign_with(key: bytes, kid: str, envelope: bytes) -> bytes:
    packed: bytes = msgpack.packb(["gq-sig", kid, hmac.digest(key, envelope, "sha256"), envelope])
    return packed


def tampered(body: bytes) -> bytes:
    """The body with one byte of its envelope changed (the last: ``created``)."""
    return body[:-1] + bytes([body[-1] ^ 1])


ENVELOPE = Codec().encode(message())


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (ENVELOPE, "the message is not signed"),
        (b"\xc1 garbage", "the message is not signed"),
        (b"", "the message is not signed"),
        (b"\x94\x01\x02", "the message is not signed: not a signed body"),
        (msgpack.packb(["other", "k1", b"x" * 32, ENVELOPE]), "not a signed body"),
        (msgpack.packb(["gq-sig", 1, b"x" * 32, ENVELOPE]), "not a signed body"),
        (msgpack.packb(["gq-sig", "k1", b"x" * 32, "text"]), "not a signed body"),
        (msgpack.packb(["gq-sig", "k1", b"short", ENVELOPE]), "not 32 bytes of HMAC-SHA256"),
        (sign_with(K1, "k9", ENVELOPE), "unknown signing key id 'k9'"),
        (sign_with(b"w" * 32, "k1", ENVELOPE), "bad signature (key 'k1')"),
        (tampered(sign_with(K1, "k1", ENVELOPE)), "bad signature (key 'k1')"),
    ],
    ids=[
        "unsigned",
        "garbage",
        "empty",
        "short array",
        "wrong tag",
        "kid not text",
        "envelope not bytes",
        "short mac",
        "unknown kid",
        "wrong key",
        "tampered",
    ],
)
def test_what_does_not_verify(body: bytes, error: str) -> None:
    with pytest.raises(SignatureError) as info:
        signed_codec({"k1": K1}).decode(body)
    assert error in str(info.value)
    assert isinstance(info.value, DecodeError)


def test_a_bad_envelope_inside_a_good_signature_is_a_decode_error() -> None:
    envelope = msgpack.packb({"v": 1, "id": "x", "task": "t" * 300})
    with pytest.raises(DecodeError, match="'task' is 300 characters long") as info:
        signed_codec({"k1": K1}).decode(sign_with(K1, "k1", envelope))
    assert not isinstance(info.value, SignatureError)


def test_key_rotation() -> None:
    old = signed_codec({"k1": K1})
    both = signed_codec({"k1": K1, "k2": K2}, "k2")
    new = signed_codec({"k2": K2})
    sent_old, sent_both = old.encode(message()), both.encode(message())
    assert msgpack.unpackb(sent_both)[1] == "k2"
    assert both.decode(sent_old).task == "tasks.add"  # during the rotation both verify
    assert old.decode(sent_old).task == new.decode(sent_both).task == "tasks.add"
    with pytest.raises(SignatureError, match="unknown signing key id 'k1'"):
        new.decode(sent_old)  # once the old key is gone


def test_the_signed_body_respects_the_size_limit() -> None:
    codec = SignedCodec(Signer({"k1": K1}), max_message_size=300)
    plain_size = len(Codec().encode(message(args=["x" * 200])))
    assert plain_size <= 300
    with pytest.raises(PayloadTooLarge):  # fits unsigned, not with its signature
        codec.encode(message(args=["x" * 200]))
    with pytest.raises(DecodeError, match="above the limit"):
        codec.decode(b"\x94" + b"\x00" * 400)


def test_an_app_without_signing_says_a_signed_message_needs_keys() -> None:
    with pytest.raises(DecodeError, match="the message is signed; set signing_keys"):
        Codec().decode(sign_with(K1, "k1", ENVELOPE))


# Configuration.


def test_signing_is_off_by_default_and_the_plain_codec_is_used() -> None:
    app = GopherQ("t", broker="memory://")
    assert type(app.codec) is Codec


def test_keys_from_the_environment() -> None:
    keys = json.dumps({"a": "x" * 16, "b": "y" * 16})
    with pytest.raises(ConfigurationError, match="set signing_key"):
        codec_for(Settings.load({}, {"GOPHERQ_SIGNING_KEYS": keys}))
    environ = {"GOPHERQ_SIGNING_KEYS": keys, "GOPHERQ_SIGNING_KEY": "b"}
    codec = codec_for(Settings.load({}, environ))
    assert isinstance(codec, SignedCodec)
    assert codec.signer.kid == "b"
    assert codec.signer.kids == ["a", "b"]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"signing_keys": {"k1": "short"}}, "'k1' is 5 bytes; use at least 16"),
        ({"signing_keys": {"k1": K1, "k2": K2}}, "set signing_key to the id of the key"),
        ({"signing_keys": {"k1": K1}, "signing_key": "k2"}, "signing_key 'k2' is not one of"),
        ({"signing_key": "k1"}, "signing_key is set but signing_keys is empty"),
        ({"signing_keys": {"k1": 12345678901234567}}, "must be str or bytes"),
        ({"signing_keys": {"": K1}}, "key id must be a string of 1-64"),
        ({"signing_keys": "k1"}, "setting 'signing_keys' must be Mapping"),
    ],
)
def test_bad_configuration(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        GopherQ("t", broker="memory://", **options)


def test_secrets_are_never_shown() -> None:
    app = GopherQ("t", broker="memory://", signing_keys={"k1": K1, "k2": K2}, signing_key="k1")
    assert isinstance(app.codec, SignedCodec)
    for text in (repr(app.settings), repr(app.codec.signer), str(app.settings)):
        assert K1.decode() not in text
        assert K2 not in text
    with pytest.raises(ConfigurationError) as info:
        GopherQ("t", broker="memory://", signing_keys={"k1": "tooshort"})
    assert "tooshort" not in str(info.value)


# Through a real consumer, on the memory and SQLite brokers.


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'q.db'}"


def drain(app: GopherQ) -> None:
    consumer = Consumer(app, ["default"], burst=True, reserve_timeout=0.2)
    assert consumer.run() is Exit.DRAINED


def test_the_worker_dead_letters_what_is_not_validly_signed(url: str) -> None:
    worker = GopherQ("worker", broker=url, signing_keys={"k1": K1, "k2": K2}, signing_key="k2")
    ran: list[int] = []

    @worker.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        ran.append(x)
        return x + y

    broker = worker.broker  # one store (the memory broker is per instance)
    unsigned = GopherQ("unsigned", broker=broker)
    stranger = GopherQ("stranger", broker=broker, signing_keys={"k9": b"k9" * 16})
    impostor = GopherQ("impostor", broker=broker, signing_keys={"k1": b"not the real key!"})
    rotated_out = GopherQ("old", broker=broker, signing_keys={"k1": K1})

    good_new = add.delay(1, 2)
    good_old = rotated_out.send_task("tasks.add", (3, 4))
    bad = {
        unsigned.send_task("tasks.add", (5, 6)).id: "the message is not signed",
        stranger.send_task("tasks.add", (7, 8)).id: "unknown signing key id 'k9'",
        impostor.send_task("tasks.add", (9, 10)).id: "bad signature (key 'k1')",
    }
    altered = new_id()
    body = worker.codec.encode(Message(altered, "tasks.add", args=[11, 12]))
    broker.enqueue([Envelope(altered, "default", 2, body.replace(b"\x0b\x0c", b"\x0b\x0d"))])
    bad[altered] = "bad signature (key 'k2')"
    # Unsigned and undecodable too (an unknown extension in its args): its arguments
    # are never unpacked, so it is a signature failure, not a decode error.
    sneaky = new_id()
    sneaky_body = msgpack.packb(
        {"v": 1, "id": sneaky, "task": "tasks.add", "args": [msgpack.ExtType(42, b"x")]}
    )
    broker.enqueue([Envelope(sneaky, "default", 2, sneaky_body)])
    bad[sneaky] = "the message is not signed"
    drain(worker)

    assert good_new.get(timeout=5) == 3
    assert worker.result(good_old.id).get(timeout=5) == 7
    assert sorted(ran) == [1, 3]
    letters = {letter.id: letter for letter in broker.dead_letters()}
    assert set(letters) == set(bad)
    for id, error in bad.items():
        assert letters[id].reason == DeadReason.SIGNATURE_INVALID
        assert letters[id].error.startswith(f"SignatureError: {error}")
        record = worker.backend.get(id)
        assert record is not None
        assert record.state is State.DEAD
    # The dead letters still show the task name they claimed, where it can be read.
    names = {info.id: info.task for info in dead_letters(worker)}
    assert names == {id: None if id == sneaky else "tasks.add" for id in bad}
    worker.close()


def test_eager_mode_signs_and_verifies() -> None:
    app = GopherQ("t", eager=True, signing_keys={"k1": K1})

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.delay(2, 3).get() == 5
