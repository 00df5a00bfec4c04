"""Rows a foreign producer wrote straight into the SQLite broker's ``messages`` table.

Each case plants rows with raw ``sqlite3``, with column values of the wrong type
or range, next to good messages sent through the app, and runs a real
``Consumer`` on the file. Every planted row must end run or dead-lettered with
a reason; nothing stays leased, ready or scheduled; one bad row never stops a
reserve, so the good messages run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gopherq import GopherQ
from gopherq.brokers.sqlite import SQLiteBroker
from gopherq.message import Message, new_id
from gopherq.states import State
from gopherq.worker import Consumer, Exit

pytestmark = pytest.mark.timeout(60)

RUN = "run"
"""Expected: the task ran (the row's body is a good message)."""

HUGE = "9223372036854775807"
TINY = "-9223372036854775808"

# name: (column values as SQL literals, over a ready row with a good body; expected end).
CASES: dict[str, tuple[dict[str, str], str]] = {
    "priority text": ({"priority": "'high'"}, RUN),
    "priority real": ({"priority": "2.5"}, RUN),
    "priority blob": ({"priority": "x'01'"}, RUN),
    "priority huge": ({"priority": HUGE}, RUN),
    "priority tiny": ({"priority": TINY}, RUN),
    "run_at text": ({"run_at": "'soon'"}, RUN),
    "run_at blob": ({"run_at": "x'00'"}, RUN),
    "run_at infinite": ({"run_at": "1e999"}, RUN),
    "attempt text": ({"attempt": "'x'"}, RUN),
    "attempt negative": ({"attempt": "-3"}, RUN),
    "attempt huge": ({"attempt": HUGE}, RUN),
    "attempt real": ({"attempt": "1.5"}, RUN),
    "deliveries text": ({"deliveries": "'x'"}, RUN),
    "deliveries negative": ({"deliveries": "-100"}, RUN),
    "deliveries huge": ({"deliveries": HUGE}, "WORKER_LOST"),
    "cancelled text": ({"cancelled": "'yes'"}, RUN),
    "cancelled two": ({"cancelled": "2"}, RUN),
    "token and lease on a ready row": ({"token": "'stale'", "lease_until": "'x'"}, RUN),
    "key blob": ({"key": "x'01'"}, RUN),
    "reason and error junk": ({"reason": "1", "error": "x'ff'", "died": "'x'"}, RUN),
    "everything at once": (
        {"priority": "'p'", "run_at": "x'01'", "attempt": "-1", "deliveries": "'d'"},
        RUN,
    ),
    "body text": ({"body": "'not bytes'"}, "DECODE_ERROR"),
    "body integer": ({"body": "42"}, "DECODE_ERROR"),
    "body real": ({"body": "1.5"}, "DECODE_ERROR"),
    "body empty": ({"body": "x''"}, "DECODE_ERROR"),
    "body zeros": ({"body": "zeroblob(64)"}, "DECODE_ERROR"),
    "id blob": ({"id": "x'6964'"}, "DECODE_ERROR"),
    "id not UTF-8": ({"id": "CAST(x'ff69' AS TEXT)"}, "DECODE_ERROR"),
    "state unknown": ({"state": "'zombie'"}, "DECODE_ERROR"),
    "state empty": ({"state": "''"}, "DECODE_ERROR"),
    "state blob": ({"state": "x'00'"}, "DECODE_ERROR"),
    "scheduled, run_at text": ({"state": "'scheduled'", "run_at": "'tomorrow'"}, "DECODE_ERROR"),
    "scheduled, run_at blob": ({"state": "'scheduled'", "run_at": "x'01'"}, "DECODE_ERROR"),
    "scheduled long ago": ({"state": "'scheduled'", "run_at": "-1e300"}, RUN),
    "leased, no lease": ({"state": "'leased'", "token": "'t'"}, "DECODE_ERROR"),
    "leased, lease text": (
        {"state": "'leased'", "token": "'t'", "lease_until": "'later'"},
        "DECODE_ERROR",
    ),
    "leased, expired": ({"state": "'leased'", "token": "'t'", "lease_until": "1"}, RUN),
}


@pytest.fixture
def app(tmp_path: Path) -> GopherQ:
    app = GopherQ("t", broker=f"sqlite:///{tmp_path / 'q.db'}", max_deliveries=3)

    @app.task(name="record")
    def record(name: str) -> str:
        return name

    app.broker.ping()  # the file and its tables exist
    return app


def plant(app: GopherQ, name: str, columns: dict[str, str]) -> str:
    """Insert one row with raw SQL: a good message of task ``record(name)``, ready in the
    default queue, with ``columns`` (SQL literals) instead. Returns its id."""
    id = new_id()
    body = app.codec.encode(Message(id=id, task="record", args=[name]))
    values: dict[str, Any] = {
        "id": "?",
        "queue": "'default'",
        "priority": "2",
        "state": "'ready'",
        "run_at": "0",
        "body": "?",
    }
    values.update(columns)
    given: dict[str, Any] = {"id": id, "body": body}
    params = [given[column] for column, value in values.items() if value == "?"]
    assert isinstance(app.broker, SQLiteBroker)
    with sqlite3.connect(app.broker.path) as conn:
        conn.execute(
            f"INSERT INTO messages ({', '.join(values)}) VALUES ({', '.join(values.values())})",
            params,
        )
    return id


def drain(app: GopherQ) -> None:
    """Run a burst consumer until nothing is left to reserve."""
    consumer = Consumer(app, ["default"], burst=True, reserve_timeout=0.2)
    assert consumer.run() is Exit.DRAINED


def ids_of_dead(app: GopherQ) -> dict[Any, str]:
    return {letter.id: letter.reason for letter in app.broker.dead_letters(limit=1000)}


@pytest.mark.parametrize("case", list(CASES))
def test_a_planted_row_ends_run_or_dead_lettered(app: GopherQ, case: str) -> None:
    columns, expected = CASES[case]
    before = app.tasks["record"].delay("before")
    id = plant(app, case, columns)
    after = app.tasks["record"].delay("after")
    drain(app)  # its first reserve is a recovery tick: it sweeps stray rows
    drain(app)  # whatever the first pass made ready or swept

    assert before.get(timeout=5) == "before"
    assert after.get(timeout=5) == "after"
    stats = app.broker.stats()["default"]
    assert (stats.ready, stats.scheduled, stats.running) == (0, 0, 0)
    dead = ids_of_dead(app)
    planted_id: Any = {"id blob": b"id", "id not UTF-8": b"\xffi"}.get(case, id)
    if expected == RUN:
        assert dead == {}
        record = app.backend.get(id)
        assert record is not None and record.state is State.SUCCEEDED, record
        assert app.broker.locate(id) is None
    else:
        assert dead == {planted_id: expected}
        [letter] = app.broker.dead_letters()
        assert letter.error
        assert isinstance(letter.died, float)


def test_many_bad_rows_at_once_never_block_the_good_ones(app: GopherQ) -> None:
    good = [app.tasks["record"].delay(f"good{n}") for n in range(5)]
    planted = {plant(app, case, columns): expected for case, (columns, expected) in CASES.items()}
    drain(app)
    drain(app)
    assert [r.get(timeout=5) for r in good] == [f"good{n}" for n in range(5)]
    stats = app.broker.stats()["default"]
    assert (stats.ready, stats.scheduled, stats.running) == (0, 0, 0)
    dead = ids_of_dead(app)
    for id, expected in planted.items():
        if expected == RUN:
            record = app.backend.get(id)
            assert record is not None and record.state is State.SUCCEEDED, id
        elif id in dead:
            assert dead[id] == expected
    assert {b"id", b"\xffi"} <= dead.keys()
    assert len(dead) == sum(expected != RUN for expected in planted.values())


def test_reserve_and_its_wait_survive_stray_times(app: GopherQ) -> None:
    """A blocked reserve computes when to wake from the next eta and lease expiry: one
    that is not a number must not make it fail."""
    plant(app, "s", {"state": "'scheduled'", "run_at": "'tomorrow'"})
    plant(app, "l", {"state": "'leased'", "token": "'t'", "lease_until": "'later'"})
    broker = SQLiteBroker(app.broker.url)
    assert broker.reserve(["default"], 10, 0.3) == []
    broker.close()


def test_locate_and_peek_read_a_stray_row(app: GopherQ) -> None:
    zombie = plant(app, "z", {"state": "'zombie'"})
    scheduled = plant(app, "s", {"state": "'scheduled'", "run_at": "'tomorrow'"})
    assert app.broker.locate(zombie) is None
    assert app.broker.locate(scheduled) is State.SCHEDULED
    assert app.broker.peek(zombie) is None
    odd = plant(app, "o", {"priority": "'high'", "attempt": "'x'", "body": "'text'"})
    peeked = app.broker.peek(odd)
    assert peeked is not None and peeked.state is State.QUEUED
    assert (peeked.priority, peeked.attempt, peeked.body) == (2**31 - 1, 0, b"text")


def test_the_schema_refuses_null_in_its_required_columns(app: GopherQ) -> None:
    for column in ("id", "queue", "priority", "state", "run_at", "attempt", "body"):
        with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
            plant(app, column, {column: "NULL"})
