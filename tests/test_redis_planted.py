"""Message entries that a foreign writer planted or spoiled in Redis, with raw commands.

Whatever is wrong with an entry (an id with no hash, a key that is not a hash, a
hash with no body, fields that are not numbers, a wrong state, odd scores), every
message a worker reserves ends run or dead-lettered with a reason, a good message
behind it still runs, no call fails, and nothing is left behind but dead letters
(which expire). See the key layout in gopherq/brokers/redis/scripts/lib.lua.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis
import services

from gopherq import GopherQ
from gopherq.brokers import Envelope
from gopherq.brokers.redis import RedisBroker
from gopherq.message import Message
from gopherq.states import State
from gopherq.worker import Consumer, Exit

pytestmark = pytest.mark.timeout(60)

QUEUE = "default"
READY_SCORE = 2 * 2**48 + 1  # priority 2, a seq older than any enqueue's: first in line
PAST = 0  # an eta or lease end long gone (units since 2024)


def units_ago(seconds: float) -> int:
    """A time ``seconds`` ago in the scripts' units (10 us steps since 2024)."""
    return int((time.time() - seconds - 1_704_067_200) * 100_000)


@dataclass
class Planted:
    """A queue on the shared Redis, a raw client on it, and an app whose consumer runs."""

    broker: RedisBroker
    app: GopherQ
    raw: redis.Redis
    ran: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.broker._base(QUEUE)

    def key(self, suffix: str) -> str:
        return f"{self.base}:{suffix}"

    def body(self, tag: str, id: str) -> bytes:
        """A valid message body: the task ``note(tag)``."""
        return self.app.codec.encode(Message(id=id, task="note", args=[tag], queue=QUEUE))

    def message(self, id: str, fields: dict[str, str | bytes], place: str, score: float) -> None:
        """Plant a message hash (none when ``fields`` is empty) and its id in a zset."""
        if fields:
            self.raw.hset(self.key(f"m:{id}"), mapping=fields)
        self.raw.zadd(self.key(place), {id: score})

    def drain(self) -> None:
        """Run a burst consumer until nothing is ready."""
        consumer = Consumer(self.app, [QUEUE], burst=True, reserve_timeout=0.2)
        assert consumer.run() is Exit.DRAINED

    def assert_clean(self) -> None:
        """Nothing ready, scheduled or leased; every message hash left is a dead letter."""
        for place in ("ready", "delayed", "leased"):
            assert self.raw.zcard(self.key(place)) == 0, place
        dead = {m.decode() for m in self.raw.zrange(self.key("dead"), 0, -1)}
        hashes = {
            k.decode().rpartition(":m:")[2] for k in self.raw.scan_iter(self.key("m:*"), count=1000)
        }
        assert hashes <= dead
        stats = self.broker.stats()[QUEUE]
        assert (stats.ready, stats.scheduled, stats.running) == (0, 0, 0)
        assert stats.dead == len(self.broker.dead_letters(QUEUE)) == len(dead)


@pytest.fixture
def planted() -> Iterator[Planted]:
    url = services.redis_test_url()
    broker = RedisBroker(url)
    app = GopherQ("planted", broker=broker, backend="memory://", events=False)
    raw = redis.Redis.from_url(url.partition("?")[0])
    env = Planted(broker, app, raw)

    @app.task(name="note")
    def note(tag: str) -> None:
        env.ran.append(tag)

    broker.pause(QUEUE)  # registers the queue (stats, locate), as an enqueue would
    broker.resume(QUEUE)
    yield env
    raw.close()
    broker.close()
    services.delete_keys(url)


def good_fields(env: Planted, id: str, tag: str) -> dict[str, str | bytes]:
    return {"b": env.body(tag, id), "p": "2", "s": "1", "st": "r"}


def spoiled(**changes: str | None) -> Callable[[Planted, str, str], dict[str, str | bytes]]:
    """Good fields with ``changes`` (None: the field is absent)."""

    def fields(env: Planted, id: str, tag: str) -> dict[str, str | bytes]:
        out = good_fields(env, id, tag)
        for name, value in changes.items():
            if value is None:
                out.pop(name, None)
            else:
                out[name] = value
        return out

    return fields


def nothing(env: Planted, id: str, tag: str) -> dict[str, str | bytes]:
    return {}


# (fields of the hash, zset, score, expected: "ran" or the dead letter's error text)
CASES = {
    "ready, no hash": (nothing, "ready", READY_SCORE, "empty body"),
    "ready, no body": (spoiled(b=None), "ready", READY_SCORE, "empty body"),
    "ready, empty body": (spoiled(b=""), "ready", READY_SCORE, "empty body"),
    "ready, body not msgpack": (spoiled(b=b"\xc1"), "ready", READY_SCORE, "not valid msgpack"),
    "ready, priority text": (spoiled(p="high"), "ready", READY_SCORE, "ran"),
    "ready, priority fraction": (spoiled(p="1.5"), "ready", READY_SCORE, "ran"),
    "ready, priority nan": (spoiled(p="nan"), "ready", READY_SCORE, "ran"),
    "ready, priority inf": (spoiled(p="inf"), "ready", READY_SCORE, "ran"),
    "ready, no priority": (spoiled(p=None), "ready", READY_SCORE, "ran"),
    "ready, attempt text": (spoiled(a="x"), "ready", READY_SCORE, "ran"),
    "ready, attempt negative": (spoiled(a="-4"), "ready", READY_SCORE, "ran"),
    "ready, attempt 1.0": (spoiled(a="1.0"), "ready", READY_SCORE, "ran"),
    "ready, deliveries nan": (spoiled(d="nan"), "ready", READY_SCORE, "ran"),
    "ready, deliveries huge": (spoiled(d="1e400"), "ready", READY_SCORE, "ran"),
    "ready, seq text": (spoiled(s="abc"), "ready", READY_SCORE, "ran"),
    "ready, wrong state": (spoiled(st="zz"), "ready", READY_SCORE, "ran"),
    "ready, score a fraction": (good_fields, "ready", READY_SCORE + 0.5, "ran"),
    "ready, score -inf": (good_fields, "ready", float("-inf"), "ran"),
    "delayed, no hash": (nothing, "delayed", PAST, "empty body"),
    "delayed, no priority": (spoiled(p=None, st="s"), "delayed", PAST, "ran"),
    "delayed, priority text": (spoiled(p="x", st="s"), "delayed", PAST, "ran"),
    "delayed, score -inf": (spoiled(st="s"), "delayed", float("-inf"), "ran"),
    "leased, no hash": (nothing, "leased", PAST, "empty body"),
    "leased, seq text": (spoiled(s="x", st="l", t="tok"), "leased", PAST, "ran"),
    "leased, no seq": (spoiled(s=None, st="l", t="tok"), "leased", PAST, "ran"),
    "leased, wrong state": (spoiled(st="r"), "leased", PAST, "ran"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_planted_entry_runs_or_dies_with_a_reason(planted: Planted, case: str) -> None:
    fields, place, score, expected = CASES[case]
    id = uuid.uuid4().hex
    planted.message(id, fields(planted, id, "planted"), place, score)
    assert planted.broker.stats()[QUEUE].ready == 1  # counted, not lost
    planted.app.tasks["note"].delay("good")
    planted.drain()
    assert "good" in planted.ran
    letters = {d.id: d for d in planted.broker.dead_letters(QUEUE)}
    if expected == "ran":
        assert planted.ran.count("planted") == 1
        assert letters == {}
    else:
        assert "planted" not in planted.ran
        assert letters[id].reason == "DECODE_ERROR"
        assert expected in letters[id].error
    planted.assert_clean()


@pytest.mark.parametrize("place", ["ready", "delayed", "leased"])
def test_a_key_that_is_not_a_hash(planted: Planted, place: str) -> None:
    id = uuid.uuid4().hex
    planted.raw.set(planted.key(f"m:{id}"), "junk")
    planted.raw.zadd(planted.key(place), {id: READY_SCORE if place == "ready" else PAST})
    planted.app.tasks["note"].delay("good")
    planted.drain()
    assert planted.ran == ["good"]
    [letter] = planted.broker.dead_letters(QUEUE)
    assert (letter.id, letter.reason) == (id, "DECODE_ERROR")
    planted.assert_clean()


@pytest.mark.parametrize("with_hash", [True, False])
def test_an_id_that_is_not_utf8(planted: Planted, with_hash: bool) -> None:
    """A worker's ids are text: the message moves to an id naming the bytes in hex."""
    id = b"\xff\xfe\xed\xa0\x80"  # nothing Python decodes (a surrogate, too)
    if with_hash:
        fields = good_fields(planted, "bad-id-" + id.hex(), "odd")  # the id it moves to
        planted.raw.hset(planted.key("m:").encode() + id, mapping=fields)
    planted.raw.zadd(planted.key("ready"), {id: READY_SCORE})
    planted.app.tasks["note"].delay("good")
    planted.drain()
    assert sorted(planted.ran) == (["good", "odd"] if with_hash else ["good"])
    letters = planted.broker.dead_letters(QUEUE)
    assert [d.id for d in letters] == ([] if with_hash else ["bad-id-fffeeda080"])
    planted.assert_clean()


def test_ids_keep_their_bytes_exactly_when_python_decodes_them(planted: Planted) -> None:
    valid = ["é", "✓", "𝄞", "\u07ff", "\uffff", "\U0010ffff", "a\u0800b"]
    invalid = [
        b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
        b"\xf0\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\x80",
        b"\xe2\x82", b"\xc3", b"a\xff",
    ]  # fmt: skip
    planted.raw.zadd(
        planted.key("ready"),
        {id: READY_SCORE for id in [v.encode() for v in valid] + invalid},
    )
    planted.drain()
    expected = set(valid) | {"bad-id-" + id.hex() for id in invalid}
    assert {d.id for d in planted.broker.dead_letters(QUEUE)} == expected
    planted.assert_clean()


def test_a_repaired_message_retries_and_goes_back(planted: Planted) -> None:
    """Fields Redis cannot count on (HINCRBY in retry and requeue) are rewritten."""
    broker, id = planted.broker, uuid.uuid4().hex
    planted.message(id, spoiled(a="1.0", d="two")(planted, id, "x"), "ready", READY_SCORE)
    [delivery] = broker.reserve([QUEUE], 1, 0)
    assert (delivery.attempt, delivery.deliveries, delivery.priority) == (0, 1, 2)
    assert broker.requeue([delivery]) == 1  # uncounts the delivery: HINCRBY d -1
    [delivery] = broker.reserve([QUEUE], 1, 0)
    assert delivery.deliveries == 1
    assert broker.retry(delivery, 0, "again")  # at once (an eta or countdown of 0); HINCRBY a 1
    [delivery] = broker.reserve([QUEUE], 1, 0)
    assert delivery.attempt == 1
    assert broker.ack([delivery]) == 1
    planted.assert_clean()


def test_dead_letters_with_spoiled_fields_are_listed_and_deleted(planted: Planted) -> None:
    broker = planted.broker
    junk, bare, good = (uuid.uuid4().hex for _ in range(3))
    planted.message(
        junk, {"b": b"x", "p": "p", "a": "a", "x": "x", "st": "d"}, "dead", units_ago(9)
    )
    planted.message(bare, {}, "dead", units_ago(8))
    broker.enqueue([Envelope(good, QUEUE, 2, planted.body("x", good))])
    [delivery] = broker.reserve([QUEUE], 1, 0)
    assert broker.dead(delivery, "REJECTED", "no")
    letters = {d.id: d for d in broker.dead_letters(QUEUE)}
    assert set(letters) == {junk, bare, good}
    assert (letters[junk].priority, letters[junk].attempt, letters[junk].body) == (2, 0, b"x")
    assert letters[bare].body == b"" and "no body" in letters[bare].error
    assert broker.stats()[QUEUE].dead == 3
    assert broker.locate(bare) is State.DEAD
    peeked = broker.peek(bare, QUEUE)
    assert peeked is not None and (peeked.state, peeked.body, peeked.priority) == (
        State.DEAD,
        b"",
        2,
    )
    peeked = broker.peek(junk)
    assert peeked is not None and (peeked.priority, peeked.attempt, peeked.body) == (2, 0, b"x")
    assert broker.delete(bare) and broker.locate(bare) is None
    assert broker.requeue_dead([junk]) == 1
    assert broker.locate(junk) is State.QUEUED
    assert broker.purge(QUEUE) == 1 and broker.purge_dead(QUEUE) == 1
    assert planted.raw.keys(planted.key("m:*")) == []


def test_admin_calls_on_a_wrong_state(planted: Planted) -> None:
    """locate, peek, cancel and delete find an entry by the zset holding it when st is
    junk (a key that is not a hash too)."""
    broker = planted.broker
    ids = [uuid.uuid4().hex for _ in range(3)]
    for id in ids:
        planted.message(id, spoiled(st="zz", a="bad")(planted, id, "x"), "ready", READY_SCORE)
    planted.raw.set(planted.key(f"m:{ids[2]}"), "junk")
    assert [broker.locate(id) for id in ids] == [State.QUEUED] * 3
    assert [getattr(broker.peek(id), "state", None) for id in ids] == [State.QUEUED] * 3
    cancelled = broker.cancel([*ids[:2], "unknown"])
    assert [(c.id, c.was, c.attempt) for c in cancelled] == [
        (id, State.QUEUED, 0) for id in ids[:2]
    ]
    assert broker.delete(ids[2])
    assert all(broker.locate(id) is None for id in ids)
    assert planted.raw.keys(planted.key("m:*")) == []


@pytest.mark.parametrize("seq", ["abc", "inf", "nan", "-inf"])
def test_a_spoiled_seq_counter(planted: Planted, seq: str) -> None:
    planted.raw.set(planted.key("seq"), seq)
    planted.app.tasks["note"].delay("first")
    planted.app.tasks["note"].delay("second")
    planted.drain()
    assert planted.ran == ["first", "second"]
    planted.assert_clean()


def test_queue_depths_count_planted_scores(planted: Planted) -> None:
    """Every ready entry is counted, whatever its score: a fractional one (no priority
    range holds it exactly) and those after it at the default priority."""
    planted.message("old", good_fields(planted, "old", "old"), "ready", READY_SCORE)
    planted.message("odd", good_fields(planted, "odd", "odd"), "ready", 3 * 2**48 + 0.5)
    planted.message("late", good_fields(planted, "late", "late"), "ready", 4 * 2**48 + 9)
    depth = planted.broker.queue_depths()[QUEUE]
    assert dict(depth.ready) == {2: 3}
    assert depth.oldest_age is not None
    assert depth.oldest_age > 86400  # seq 1: the first unit of 2024
