"""The SQLite broker's ``message_counts``: kept by triggers through every path that
moves a message, so that ``stats`` and ``queue_depths`` never count the messages.

After each step the counts are compared with a full ``COUNT`` of the ``messages``
table, and ``stats`` with counts computed from the table the way ``reserve`` sees
it (due etas and expired leases as ready, old dead letters gone).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from gopherq.brokers import Envelope, QueueStats
from gopherq.brokers.sqlite import SQLiteBroker

Counts = dict[tuple[str, str, object], int]


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def envelope(
    id: str,
    queue: str = "default",
    priority: int = 2,
    *,
    eta: float | None = None,
    key: str | None = None,
) -> Envelope:
    return Envelope(id, queue, priority, id.encode(), eta, key=key)


def counted(path: Path) -> tuple[Counts, Counts]:
    """The kept counts and a full count of the table, in one read transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        kept = conn.execute(
            "SELECT queue, priority, ready, scheduled, leased, dead FROM message_counts"
        ).fetchall()
        full = conn.execute(
            """SELECT queue, state, priority, count(*) FROM messages
            WHERE state IN ('ready', 'scheduled', 'leased', 'dead') GROUP BY 1, 2, 3"""
        ).fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    states = ("ready", "scheduled", "leased", "dead")
    return (
        {
            (queue, state, priority): n
            for queue, priority, *numbers in kept
            for state, n in zip(states, numbers, strict=True)
            if n
        },
        {row[:3]: row[3] for row in full},
    )


def stats_by_counting(path: Path, dead_letter_ttl: float) -> dict[str, QueueStats]:
    """``stats`` as the old full ``COUNT`` computed it."""
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute(
            """SELECT queue,
                sum(state = 'ready' OR (state = 'scheduled' AND run_at <= ?1)
                    OR (state = 'leased' AND lease_until <= ?1)),
                sum(state = 'scheduled' AND run_at > ?1),
                sum(state = 'leased' AND lease_until > ?1),
                sum(state = 'dead' AND died > ?2)
            FROM messages GROUP BY queue""",
            (now, now - dead_letter_ttl),
        ).fetchall()
        paused = dict(conn.execute("SELECT name, paused FROM queues").fetchall())
    finally:
        conn.close()
    found = {queue: counts for queue, *counts in rows}
    return {
        name: QueueStats(name, *found.get(name, (0, 0, 0, 0)), paused=bool(paused.get(name)))
        for name in sorted(set(paused) | set(found))
    }


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "q.db"


@pytest.fixture
def broker(path: Path) -> Iterator[SQLiteBroker]:
    handle = SQLiteBroker(url_of(path), lease_seconds=30, dead_letter_ttl=3600)
    yield handle
    handle.close()


def check(broker: SQLiteBroker, path: Path) -> Counts:
    stats = broker.stats()  # first: it opens (and migrates) the file
    kept, full = counted(path)
    assert kept == full
    assert stats == stats_by_counting(path, broker.dead_letter_ttl)
    return kept


def test_counts_stay_exact_through_every_path(broker: SQLiteBroker, path: Path) -> None:
    broker.enqueue([envelope("one")])  # send
    assert check(broker, path) == {("default", "ready", 2): 1}
    broker.enqueue([envelope(f"m{i}", priority=i % 3) for i in range(6)])  # send_many
    broker.enqueue([envelope(f"o{i}", "other") for i in range(3)])
    broker.enqueue([envelope("k1", key="k"), envelope("k2", key="k")])  # a key held: one stored
    broker.enqueue([envelope("one")])  # an id already stored: nothing
    check(broker, path)

    soon = time.time() + 0.3
    broker.enqueue([envelope(f"e{i}", "other", eta=soon) for i in range(2)])
    broker.enqueue([envelope("later", "other", eta=time.time() + 3600)])
    assert check(broker, path)["other", "scheduled", 2] == 3
    time.sleep(0.35)
    # Due but not yet promoted: stats counts them as ready already.
    assert broker.stats()["other"].ready == 5
    check(broker, path)
    assert broker.recover() == 2  # eta becoming due
    assert check(broker, path)["other", "ready", 2] == 5

    taken = broker.reserve(["default", "other"], 4, 0)  # lease
    assert len(taken) == 4
    check(broker, path)
    assert broker.ack(taken[:1]) == 1  # ack
    assert broker.retry(taken[1], 0, "again") is True  # nack, ready at once
    assert broker.retry(taken[2], 60, "later") is True  # retry later
    assert broker.dead(taken[3], "MAX_RETRIES", "boom") is True  # dead-letter
    check(broker, path)
    assert broker.ack(taken[:1]) == 0  # settled already: nothing moves
    check(broker, path)

    held = broker.reserve(["default"], 3, 0)
    broker.settle_held(held, {held[0].id}, lambda conn, ids: None)  # ack one, renew two
    check(broker, path)
    assert broker.requeue(held[1:2]) == 1
    assert broker.extend(held[2:]) == 1  # renewing changes no count
    check(broker, path)

    broker.pause("default")
    broker.pause("empty")
    check(broker, path)
    broker.resume("default")
    check(broker, path)

    assert broker.requeue_dead() == 1  # replay
    check(broker, path)
    dead = broker.reserve(["default", "other"], 1, 0)
    broker.dead(dead[0], "REJECTED", "no")
    assert [c.id for c in broker.cancel(["m1", held[2].id, "later"])]  # removed, marked
    check(broker, path)
    assert broker.delete("o1") is True
    assert broker.purge("default") > 0
    check(broker, path)
    assert broker.purge_dead() == 1
    check(broker, path)
    broker.purge("other")
    kept = check(broker, path)
    assert sum(n for (_, state, _), n in kept.items() if state in ("ready", "scheduled")) == 0


def test_lease_expiry_and_old_dead_letters(path: Path) -> None:
    broker = SQLiteBroker(url_of(path), lease_seconds=0.2, dead_letter_ttl=0.3)
    try:
        broker.enqueue([envelope(f"m{i}", priority=i % 2) for i in range(4)])
        taken = broker.reserve(["default"], 4, 0)
        broker.dead(taken[0], "REJECTED", "no")
        broker.extend(taken[1:2])
        time.sleep(0.25)
        # Expired leases count as ready before recovery moves them.
        stats = broker.stats()["default"]
        assert (stats.ready, stats.running, stats.dead) == (3, 0, 1)
        check(broker, path)
        assert broker.recover() == 3  # lease expiry
        check(broker, path)
        time.sleep(0.35)
        assert broker.stats()["default"].dead == 0  # past its time to live: gone already
        check(broker, path)
        broker.recover()  # and deleted
        assert counted(path)[1].get(("default", "dead", 2)) is None
        check(broker, path)
    finally:
        broker.close()


def test_oldest_age_is_the_oldest_ready_message(broker: SQLiteBroker) -> None:
    broker.enqueue([envelope("first", priority=3)])
    time.sleep(0.2)
    broker.enqueue([envelope("second", priority=0)])
    depth = broker.queue_depths()["default"]
    assert depth.ready == {0: 1, 3: 1}
    assert depth.oldest_age is not None and 0.2 <= depth.oldest_age < 5
    (first,) = broker.reserve(["default"], 1, 0)  # priority 0 first: the oldest stays
    assert first.id == "second"
    assert broker.queue_depths()["default"].oldest_age >= 0.2  # type: ignore[operator]
    broker.purge("default")
    assert broker.queue_depths()["default"].oldest_age is None


def test_rows_written_by_others_are_counted_as_stored(broker: SQLiteBroker, path: Path) -> None:
    broker.enqueue([envelope("a")])
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executemany(
            "INSERT INTO messages (id, queue, priority, state, run_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("odd-priority", "default", "high", "ready", 0.0, b"x"),
                ("odd-state", "default", 2, "parked", 0.0, b"x"),
                ("odd-time", "default", 2, "scheduled", "soon", b"x"),
            ],
        )
        conn.execute("UPDATE messages SET queue = 'moved' WHERE id = 'a'")
        conn.execute("UPDATE messages SET priority = 7 WHERE id = 'odd-priority'")
    finally:
        conn.close()
    check(broker, path)
    broker.recover()  # the sweep dead-letters the stray rows
    kept = check(broker, path)
    assert kept["default", "dead", 2] == 2


def test_an_older_file_gets_its_counts_on_open(path: Path) -> None:
    with closing(SQLiteBroker(url_of(path))) as broker:
        broker.enqueue([envelope(f"m{i}", priority=i % 3) for i in range(10)])
        broker.enqueue([envelope("later", "other", eta=time.time() + 60)])
        broker.reserve(["default"], 2, 0)
    conn = sqlite3.connect(path, isolation_level=None)
    try:  # the file as a release before the counts left it
        for trigger in ("insert", "delete", "update", "move"):
            conn.execute(f"DROP TRIGGER messages_count_{trigger}")
        conn.execute("DROP TABLE message_counts")
        conn.execute("DELETE FROM messages WHERE id = 'm5'")
    finally:
        conn.close()
    with closing(SQLiteBroker(url_of(path))) as broker:
        kept = check(broker, path)
        assert kept["default", "leased", 0] == 2 and kept["other", "scheduled", 2] == 1
        assert broker.stats()["default"].ready == 7

    conn = sqlite3.connect(path, isolation_level=None)
    try:  # a trigger missing: the counts may be wrong, so they are counted again
        conn.execute("DROP TRIGGER messages_count_delete")
        conn.execute("DELETE FROM messages WHERE id = 'm6'")
    finally:
        conn.close()
    with closing(SQLiteBroker(url_of(path))) as broker:
        check(broker, path)
        assert broker.stats()["default"].ready == 6


WORKER_APP = """
import os, signal, time
from gopherq import GopherQ

app = GopherQ("counts")


@app.task(retries=2, retry_delay=0.05, jitter=False)
def flaky(n):
    if n % 3 == 0:
        raise ValueError("boom")
    return n


@app.task
def stall(path):
    open(path, "w").write(str(os.getpid()))
    time.sleep(30)
"""


def test_counts_stay_exact_under_a_real_worker_and_a_killed_child(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    (tmp_path / "countsapp.py").write_text(WORKER_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    env.update(GOPHERQ_BROKER_URL=url_of(path), GOPHERQ_LEASE_SECONDS="1")
    from gopherq import GopherQ

    producer = GopherQ("producer", broker=url_of(path))
    worker = subprocess.Popen(
        [sys.executable, "-m", "gopherq", "worker", "-A", "countsapp", "-c", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        pid_file = tmp_path / "stall.pid"
        producer.send_task("countsapp.stall", [str(pid_file)])
        for n in range(300):
            producer.send_task("countsapp.flaky", [n])
        producer.send_task("countsapp.flaky", [1], countdown=0.5)
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the stalling task never started"
            time.sleep(0.01)
        kept, full = counted(path)  # while the worker writes
        assert kept == full
        killed = pid_file.read_text()
        os.kill(int(killed), signal.SIGKILL)  # its message goes back in line and runs again

        def settled() -> bool:
            stats = producer.broker.stats()["default"]
            again = pid_file.read_text() not in ("", killed)
            counts = (stats.ready, stats.scheduled, stats.running, stats.dead)
            return again and counts == (0, 0, 1, 100)

        while not settled():
            assert time.monotonic() < deadline, producer.broker.stats()
            kept, full = counted(path)
            assert kept == full
            time.sleep(0.05)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        producer.close()
    kept, full = counted(path)
    assert kept == full
    assert full == {("default", "dead", 2): 100, ("default", "leased", 2): 1}
