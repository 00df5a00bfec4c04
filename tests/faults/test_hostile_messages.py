"""Property test: hostile messages and broker entries never stop a real worker.

Hypothesis generates a batch of message bodies (envelopes with fields of wrong
types, huge and non-finite numbers, odd Unicode and invalid UTF-8, 16-40 KB
strings, msgpack Timestamps (ext -1) valid and not, unknown extension codes,
deep nesting, truncated and raw bytes) and entries planted in the broker's own
storage with wrong broker-side fields (priority, attempt, deliveries, state,
body). All go in at once; then ONE ``gopherq worker --burst`` runs them. It must
exit 0 in time, leave nothing ready, leased or STARTED, and each message must end
run (gone from the broker) or in dead letters with a reason.

Hypothesis draws the whole batch first (one example per message), and one worker
run then takes it all, so the test stays fast; ``GOPHERQ_TEST_FAULTS=full`` runs
more and bigger batches. Nothing shrinks (each try would be a worker run): a
failure names the messages concerned and their bodies.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from ledger import BROKERS, FaultRun, open_fault_run, scaled

from gopherq import State
from gopherq.brokers import Envelope
from gopherq.message import new_id
from gopherq.stores.redis import Connection

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(120, 1800))]

BATCH = scaled(60, 300)
"""Message bodies per example (one worker run)."""
PLANTED = scaled(12, 60)
"""Entries planted in the broker's storage per example."""
ROUNDS = scaled(1, 5)
"""Batches, each run by a worker of its own."""
WORKER_TIMEOUT = scaled(45, 300)
"""Seconds the burst worker gets to drain a batch: past that it hangs."""


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def pack_map(fields: dict[str, bytes]) -> bytes:
    """A msgpack map of already packed values (which may be invalid msgpack)."""
    head: bytes = msgpack.Packer().pack_map_header(len(fields))
    return head + b"".join(packed(key) + value for key, value in fields.items())


# Values. ``raw`` strategies give packed bytes, so that they may hold what no
# Python value packs to (invalid UTF-8, nesting past msgpack's own limit).

ODD_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40) | st.sampled_from(
    ["", "\x00", "\u202e\u2066evil", "\ufeff", "\U0001d54f" * 10, "e\u0301" * 50, "\x1b[2J\r\n"]
)
LONG_TEXT = st.builds(
    lambda n, char: char * n, st.integers(16_000, 40_000), st.sampled_from("x\u00e9\u6f22")
)
HUGE_INT = st.integers(-(2**63), 2**64 - 1) | st.sampled_from([2**64 - 1, -(2**63), 2**63])
ODD_FLOAT = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324])
TIMESTAMP = st.builds(msgpack.Timestamp, st.integers(-(2**34), 2**34), st.integers(0, 999_999_999))
EXT = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16))
RAW_EXT = st.builds(
    lambda code, data: b"\xc7" + bytes([len(data)]) + code.to_bytes(1, "big", signed=True) + data,
    st.integers(-128, -1),
    st.binary(max_size=16),
)  # ext8 of a reserved code (-1 a Timestamp, here of any length)
SCALAR = st.none() | st.booleans() | HUGE_INT | ODD_FLOAT | ODD_TEXT | st.binary(max_size=32)
VALUE = st.recursive(
    SCALAR | TIMESTAMP | EXT | LONG_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=8,
)
DEEP = st.builds(
    lambda depth, opener: opener * depth + b"\xc0", st.integers(100, 3000),
    st.sampled_from([b"\x91", b"\x81\xa1k"]),
)  # fmt: skip
BAD_UTF8 = st.builds(
    lambda data: bytes([0xA0 | len(data)]) + data, st.binary(min_size=1, max_size=31)
)  # a fixstr of any bytes
RAW_VALUE = st.one_of(VALUE.map(packed), DEEP, BAD_UTF8, RAW_EXT)
INT_FIELD = HUGE_INT.map(packed) | RAW_VALUE
NUMBER_FIELD = (ODD_FLOAT | HUGE_INT).map(packed) | RAW_VALUE
TEXT_FIELD = st.one_of((ODD_TEXT | LONG_TEXT).map(packed), BAD_UTF8, RAW_VALUE)
TASK_FIELD = st.one_of(
    LONG_TEXT.map(lambda s: packed("tasks.echo" + s)),
    ODD_TEXT.map(lambda s: packed("tasks." + s)),
    TEXT_FIELD,
)
LIST_FIELD = st.lists(VALUE, max_size=4).map(packed) | DEEP.map(lambda d: b"\x91" + d) | RAW_VALUE
MAP_FIELD = st.one_of(
    st.dictionaries(ODD_TEXT | LONG_TEXT, VALUE, max_size=3).map(packed),
    st.dictionaries(HUGE_INT | st.binary(max_size=8), VALUE, max_size=2).map(packed),
    RAW_VALUE,
)
# A time limit from 0 to a minute would only kill its process (a fault of its own,
# tested elsewhere): ``timeout`` gets every other number.
TIMEOUT_FIELD = st.one_of(
    (ODD_FLOAT | HUGE_INT).filter(lambda t: not 0 <= t < 60).map(packed),
    VALUE.filter(lambda v: isinstance(v, bool) or not isinstance(v, int | float)).map(packed),
    DEEP, BAD_UTF8, RAW_EXT,
)  # fmt: skip
FIELDS: dict[str, st.SearchStrategy[bytes]] = {
    "v": INT_FIELD,
    "id": TEXT_FIELD,
    "task": TASK_FIELD,
    "args": LIST_FIELD,
    "kwargs": MAP_FIELD,
    "queue": TEXT_FIELD,
    "priority": INT_FIELD,
    "eta": NUMBER_FIELD,
    "expires": NUMBER_FIELD,
    "attempt": INT_FIELD,
    "retries": INT_FIELD,
    "timeout": TIMEOUT_FIELD,
    "key": TEXT_FIELD,
    "deps": LIST_FIELD,
    "parent": TEXT_FIELD,
    "root": TEXT_FIELD,
    "group": TEXT_FIELD,
    "headers": MAP_FIELD,
    "created": NUMBER_FIELD,
    "zz-unknown": RAW_VALUE,
}

T = TypeVar("T")
Body = Callable[[str], bytes]
"""A message body, given the broker-side id of its message."""


def base_fields(id: str) -> dict[str, bytes]:
    """A valid envelope of ``tasks.echo``, field by field."""
    envelope = {"v": 1, "id": id, "task": "tasks.echo", "args": [1, "a"], "kwargs": {},
                "queue": "default", "priority": 2, "attempt": 0, "headers": {},
                "created": time.time()}  # fmt: skip
    return {name: packed(value) for name, value in envelope.items()}


@st.composite
def bodies(draw: st.DrawFn) -> Body:
    """A hostile body: an envelope with one to three fields made hostile (and maybe one
    left out, maybe truncated), or raw bytes."""
    kind = draw(st.sampled_from(["fields"] * 6 + ["truncated", "raw"]))
    if kind == "raw":
        raw = draw(st.one_of(
            st.binary(max_size=64), DEEP, VALUE.map(packed), BAD_UTF8,
            st.just(b"\xdb\xff\xff\xff\xff" + b"x" * 10),  # a 4 GiB string, 10 bytes of it
            st.just(b"\xdf\xff\xff\xff\xff"),  # a map of 4 billion pairs, none there
            TIMESTAMP.map(packed), EXT.map(packed), RAW_EXT,
        ))  # fmt: skip
        return lambda id: raw
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True))
    hostile = {name: draw(FIELDS[name]) for name in names}
    left_out = draw(st.none() | st.sampled_from(["v", "id", "task", "args"]))
    cut = draw(st.integers(1, 400)) if kind == "truncated" else None

    def body(id: str) -> bytes:
        fields = base_fields(id) | hostile
        if left_out is not None and left_out not in hostile:
            del fields[left_out]
        data = pack_map(fields)
        return data[: min(cut, len(data) - 1)] if cut else data

    return body


def with_fields(**fields: Any) -> Body:
    """A valid envelope with ``fields`` put in (packed, unless given as bytes)."""
    packs = {name: value if isinstance(value, bytes) else packed(value)
             for name, value in fields.items()}  # fmt: skip
    return lambda id: pack_map(base_fields(id) | packs)


SEEDS: list[Body] = [
    with_fields(task="tasks.echo" + "x" * 16_000),  # overflowed a worker's slot half
    with_fields(task="tasks.echo" + "x" * 40_000),  # killed the child writing its slot
    with_fields(created=math.nan),  # broke the Redis result index on every flush
    with_fields(eta=math.inf, expires=-math.inf, timeout=math.nan),
    with_fields(args=[msgpack.Timestamp(0, 0), msgpack.Timestamp(-(2**34), 5)]),
    with_fields(args=b"\x91\xd6\xff\x00\x00"),  # a Timestamp cut short
    with_fields(args=[msgpack.ExtType(99, b"?")]),  # an unknown extension type
    with_fields(args=b"\x91" * 3000 + b"\xc0"),
    with_fields(id="i" * 20_000, queue="q" * 20_000, key="k" * 20_000),
    with_fields(headers={"h" * 20_000: "v" * 20_000, "traceparent": 5}),
    with_fields(attempt=2**64 - 1, priority=2**63, retries=-(2**63)),
    with_fields(v=True, task=b"\xa3\xff\xfe\xfd"),
    lambda id: base_body(id)[:-3],
]
"""Bodies known to have hurt a worker, in every batch beside the generated ones."""


# Entries planted in the broker's storage: an envelope that is fine, or not, under
# broker-side fields that are wrong.
ODD_COLUMN = st.one_of(
    HUGE_INT, st.sampled_from([-1, 99, 2**62, "abc", "", "1e400", "nan", 3.5, -0.0, b"\x00"])
)


@st.composite
def planted_entries(draw: st.DrawFn) -> dict[str, Any]:
    names = ["priority", "attempt", "deliveries", "state", "body"]
    wrong = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    entry: dict[str, Any] = {"priority": 2, "attempt": 0, "deliveries": 0, "state": None}
    for name in wrong:
        if name == "state":
            entry["state"] = draw(st.sampled_from(["l", "d", "s", "x", ""]))
        elif name == "body":
            entry["body"] = draw(st.one_of(st.none(), st.binary(max_size=40), bodies()))
        else:
            entry[name] = draw(ODD_COLUMN)
    return entry


def plant_sqlite(run: FaultRun, entries: list[dict[str, Any]]) -> list[str]:
    """Insert ``entries`` as ready rows of the messages table; their ids."""
    run.producer.broker.stats()  # the schema exists
    ids = []
    with sqlite3.connect(run.path / "gopherq.db", isolation_level=None) as db:
        for entry in entries:
            id = new_id()
            body = entry.get("body", ...)
            body = body(id) if callable(body) else base_body(id) if body is ... else body
            db.execute(
                """INSERT INTO messages (id, queue, priority, state, run_at, attempt,
                   deliveries, body) VALUES (?, 'default', ?, 'ready', ?, ?, ?, ?)""",
                (id, column(entry["priority"]), time.time() - 1, column(entry["attempt"]),
                 column(entry["deliveries"]), b"" if body is None else body),
            )  # fmt: skip
            ids.append(id)
    return ids


def plant_redis(run: FaultRun, entries: list[dict[str, Any]]) -> list[str]:
    """Write ``entries`` as ready message hashes of the queue ``default``; their ids."""
    connection = Connection(run.url)
    base = f"{connection.config.prefix}:{{default}}"
    connection.close()
    assert run.server is not None
    client = redis.Redis(port=run.server.port)
    ids = []
    try:
        for n, entry in enumerate(entries, 1):
            id = new_id()
            body = entry.get("body", ...)
            body = body(id) if callable(body) else base_body(id) if body is ... else body
            fields = {
                "p": column(entry["priority"]), "a": column(entry["attempt"]),
                "d": column(entry["deliveries"]), "s": n, "st": entry["state"] or "r",
            }  # fmt: skip
            if body is not None:
                fields["b"] = body
            client.hset(f"{base}:m:{id}", mapping={k: bytes_of(v) for k, v in fields.items()})
            client.zadd(f"{base}:ready", {id: 2 * 2**48 + n})
            ids.append(id)
        client.rpush(f"{base}:wake", 1)
    finally:
        client.close()
    return ids


def base_body(id: str) -> bytes:
    return pack_map(base_fields(id))


def column(value: Any) -> Any:
    """A value SQLite and Redis both take: ints past 64 bits as text."""
    return str(value) if isinstance(value, int) and not -(2**63) <= value < 2**63 else value


def bytes_of(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


PLANT = {"sqlite": plant_sqlite, "redis": plant_redis}


def generate(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """``count`` examples of ``strategy`` drawn by hypothesis (no worker run each)."""
    examples: list[T] = []

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def collect(example: T) -> None:
        examples.append(example)

    collect()
    return examples


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("round", range(ROUNDS))
def test_hostile_messages_never_stop_a_worker(
    broker: str, round: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = SEEDS + generate(bodies(), BATCH)
    planted = generate(planted_entries(), PLANTED)
    with open_fault_run(broker, tmp_path, monkeypatch) as run:
        sent: dict[str, bytes] = {}
        envelopes = []
        for body in generated:
            id = new_id()
            sent[id] = body(id)
            envelopes.append(Envelope(id, "default", 2, sent[id]))
        run.producer.broker.enqueue(envelopes)
        check(run, sent, PLANT[broker](run, planted))


def check(run: FaultRun, sent: dict[str, bytes], planted: list[str]) -> None:
    worker = run.worker("-c", "2", "--burst", lease_seconds="5", max_deliveries="2")
    try:
        code = worker.wait(WORKER_TIMEOUT)
    except Exception:
        pytest.fail(f"the worker hangs after {WORKER_TIMEOUT}s\n{summary(run.log())}")
    log = run.log()
    assert code == 0, f"the worker exited {code}\n{summary(log)}"
    assert "process died" not in log and "worker process" not in log, summary(log)
    broker, backend = run.producer.broker, run.producer.backend
    letters = {d.id: d for d in broker.dead_letters(limit=10_000)}
    problems = []
    for id in [*sent, *planted]:
        try:
            where = broker.locate(id)
        except Exception as exc:  # a planted entry the admin cannot read: say so
            problems.append(f"{id}: locate failed: {exc}")
            continue
        if where is None:
            continue  # ran, or settled
        if where is State.DEAD and id in letters and letters[id].reason:
            continue
        body = sent.get(id, b"(planted)")
        problems.append(f"{id}: {where} {letters.get(id)} body={body[:300]!r}")
    stuck = [f"{q}: {s}" for q, s in broker.stats().items() if s.ready or s.running or s.scheduled]
    started = [f"{r.id[:80]} {r.task[:80]}" for r in backend.jobs(state=State.STARTED, limit=20)]
    assert not (problems or stuck or started), (problems[:20], stuck, started, summary(log))


def summary(log: str) -> str:
    """The worker's log lines but those of dead letters, and the last traceback."""
    lines = [line for line in log.splitlines() if line.startswith("20")]
    kept = [line[:300] for line in lines if "dead-lettered" not in line]
    trace = log.rpartition("Traceback")[2][-3000:]
    return "\n".join(kept[-40:]) + "\nlast traceback:" + trace
