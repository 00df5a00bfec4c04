"""SQLite broker and result backend across real processes on one file.

What the contract suite cannot show in one process: many producers and workers
at once, ``kill -9`` of any of them, wake-up across processes, durability after
a process exits, and the URL forms. Children are forked (cheap to start), and a
few run as fresh interpreters. Bounds are loose so that a loaded 2-core machine
passes; the point is "nothing lost, nothing twice", not speed.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gopherq.brokers import Envelope, open_broker
from gopherq.brokers.sqlite import SQLiteBroker
from gopherq.errors import BrokerError, BrokerUnavailable, ConfigurationError
from gopherq.results import JobRecord
from gopherq.results.sqlite import SQLiteResultBackend
from gopherq.states import State
from gopherq.stores.sqlite import ChangeWaiter, Database
from gopherq.stores.sqlite import _error as _sqlite_error

FORK = multiprocessing.get_context("fork")


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def envelope(id: str, queue: str = "default") -> Envelope:
    return Envelope(id, queue, 2, id.encode())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def lines(path: Path) -> list[str]:
    """The complete lines of ``path`` (a process killed mid-write may leave half a line)."""
    if not path.exists():
        return []
    text = path.read_text()
    return text.split("\n")[:-1]


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (no state inherited from the tests)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# Children. Top-level functions so that they read as programs of their own.


def produce(url: str, name: str, count: int) -> None:
    broker = open_broker(url)
    for i in range(count):
        broker.enqueue([envelope(f"{name}-{i}")])


def consume(url: str, log: Path, producers_done: multiprocessing.synchronize.Event) -> None:
    broker = open_broker(url)
    with log.open("w") as out:
        while True:
            got = broker.reserve(["default"], 16, 0.2)
            if not got:
                if producers_done.is_set():
                    return
                continue
            out.write("".join(f"{d.id} {d.deliveries}\n" for d in got))
            out.flush()
            assert broker.ack(got) == len(got)


def produce_forever(url: str, log: Path) -> None:
    broker = open_broker(url)
    with log.open("w") as out:
        batch = 0
        while True:
            broker.enqueue([envelope(f"b{batch}-{k}") for k in range(20)])
            out.write(f"{batch}\n")
            out.flush()
            batch += 1


def hold_leases(url: str, log: Path) -> None:
    broker = open_broker(url, lease_seconds=1.0)
    held: list[str] = []
    while len(held) < 30:
        held += [d.id for d in broker.reserve(["default"], 30 - len(held), 1)]
    log.write_text("".join(f"{id}\n" for id in held))
    time.sleep(60)  # killed long before


def reserve_and_report(url: str, ready: multiprocessing.synchronize.Event, out: Path) -> None:
    broker = open_broker(url)
    broker.ping()
    ready.set()
    start = time.monotonic()
    got = broker.reserve(["default"], 1, 10)
    out.write_text(f"{time.time()} {time.monotonic() - start} {len(got)}")


def store_later(url: str, record_id: str, delay: float) -> None:
    time.sleep(delay)
    done = JobRecord(record_id, "app.add", State.SUCCEEDED, result=b"\x03", finished=time.time())
    SQLiteResultBackend(url).store([done])


# (a) Many producers and consumers at once.


def test_concurrent_producers_and_consumers_deliver_each_message_once(tmp_path: Path) -> None:
    url = url_of(tmp_path / "q.db")
    broker = open_broker(url)
    broker.enqueue([envelope("early")])  # the parent has a connection when it forks
    done = FORK.Event()
    consumers = [
        FORK.Process(target=consume, args=(url, tmp_path / f"c{n}.log", done)) for n in range(2)
    ]
    producers = [FORK.Process(target=produce, args=(url, f"p{n}", 500)) for n in range(4)]
    for process in consumers + producers:
        process.start()
    for process in producers:
        process.join(60)
        assert process.exitcode == 0
    done.set()
    for process in consumers:
        process.join(60)
        assert process.exitcode == 0

    delivered = [line.split() for n in range(2) for line in lines(tmp_path / f"c{n}.log")]
    counts = Counter(id for id, _ in delivered)
    expected = {"early"} | {f"p{p}-{i}" for p in range(4) for i in range(500)}
    assert set(counts) == expected
    assert max(counts.values()) == 1
    assert {deliveries for _, deliveries in delivered} == {"1"}
    assert broker.stats()["default"].ready == 0  # the parent's handle still works
    assert integrity(tmp_path / "q.db") == "ok"


# (b) kill -9 of a producer mid-loop and of a consumer holding leases.


def test_kill_9_loses_nothing_and_leases_come_back(tmp_path: Path) -> None:
    url = url_of(tmp_path / "q.db")
    broker = open_broker(url, lease_seconds=1.0)
    broker.ping()
    produced, held_log = tmp_path / "produced.log", tmp_path / "held.log"
    producer = FORK.Process(target=produce_forever, args=(url, produced))
    holder = FORK.Process(target=hold_leases, args=(url, held_log))
    producer.start()
    holder.start()
    # The holder writes its log in one go, but a reader may see the file before its
    # content: wait for every line, not for the file.
    wait_until(
        lambda: len(lines(produced)) >= 30 and len(lines(held_log)) == 30, 30, "both children"
    )
    assert producer.pid is not None and holder.pid is not None
    os.kill(producer.pid, signal.SIGKILL)
    os.kill(holder.pid, signal.SIGKILL)
    producer.join(10)
    holder.join(10)
    assert producer.exitcode == holder.exitcode == -signal.SIGKILL

    held = set(lines(held_log))
    assert len(held) == 30
    committed = {f"b{batch}-{k}" for batch in map(int, lines(produced)) for k in range(20)}
    deliveries: dict[str, int] = {}
    deadline = time.monotonic() + 20
    while not committed <= deliveries.keys() or not held <= deliveries.keys():
        assert time.monotonic() < deadline, "messages were lost"
        got = broker.reserve(["default"], 100, 0.5)
        for delivery in got:
            assert delivery.id not in deliveries, "delivered twice"
            deliveries[delivery.id] = delivery.deliveries
        broker.ack(got)
    while got := broker.reserve(["default"], 100, 0):  # the batch in flight at the kill
        deliveries.update((d.id, d.deliveries) for d in got)
        broker.ack(got)

    assert all(deliveries[id] == 2 for id in held)  # redelivered after the lease expired
    assert all(deliveries[id] == 1 for id in deliveries.keys() - held)
    batches = Counter(id.split("-")[0] for id in deliveries)
    assert set(batches.values()) == {20}, "a batch was stored in part"
    assert integrity(tmp_path / "q.db") == "ok"


# (c) Wake-up across processes.


def test_blocked_reserve_in_another_process_wakes_on_enqueue(tmp_path: Path) -> None:
    url = url_of(tmp_path / "q.db")
    broker = open_broker(url)
    broker.ping()
    ready, out = FORK.Event(), tmp_path / "woke"
    child = FORK.Process(target=reserve_and_report, args=(url, ready, out))
    child.start()
    assert ready.wait(30)
    time.sleep(0.3)  # let it block
    enqueued = time.time()
    broker.enqueue([envelope("wake-up")])
    child.join(15)
    woke, _, count = out.read_text().split()
    assert int(count) == 1
    assert float(woke) - enqueued < 0.5


def test_an_idle_blocked_reserve_costs_almost_no_cpu(tmp_path: Path) -> None:
    broker = open_broker(url_of(tmp_path / "q.db"))
    broker.ping()
    before = resource.getrusage(resource.RUSAGE_SELF)
    assert broker.reserve(["default"], 16, 1.0) == []
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    assert cpu < 0.1


def test_reserve_falls_back_to_polling_without_inotify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "inotify_simple", None)  # import fails: poll
    url = url_of(tmp_path / "q.db")
    waiter = ChangeWaiter(str(tmp_path / "q.db"))
    assert waiter.polling
    broker = open_broker(url)
    broker.ping()
    ready, out = FORK.Event(), tmp_path / "woke"
    child = FORK.Process(target=reserve_and_report, args=(url, ready, out))
    child.start()
    assert ready.wait(30)
    time.sleep(0.3)
    enqueued = time.time()
    broker.enqueue([envelope("polled")])
    child.join(15)
    woke, _, count = out.read_text().split()
    assert int(count) == 1
    assert float(woke) - enqueued < 0.5


def test_result_wait_in_one_process_wakes_when_another_stores(tmp_path: Path) -> None:
    url = url_of(tmp_path / "q.db")
    backend = SQLiteResultBackend(url)
    SQLiteBroker(url).ping()  # results live in the broker's own file
    child = FORK.Process(target=store_later, args=(url, "job-1", 0.3))
    start = time.monotonic()
    child.start()
    record = backend.wait("job-1", 10)
    took = time.monotonic() - start
    child.join(10)
    assert record is not None and record.state is State.SUCCEEDED
    assert 0.25 <= took < 2
    with sqlite3.connect(tmp_path / "q.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"messages", "queues", "results"} <= tables


# (d) Durability: what a process committed outlives it.


@pytest.mark.parametrize("exit_how", ["returns", "kill -9"])
def test_enqueued_messages_outlive_the_process(tmp_path: Path, exit_how: str) -> None:
    url = url_of(tmp_path / "q.db")
    ending = "os.kill(os.getpid(), signal.SIGKILL)" if exit_how == "kill -9" else ""
    wrote = run_python(f"""
        import os, signal
        from gopherq.brokers import Envelope, open_broker
        broker = open_broker({url!r})
        broker.enqueue([Envelope(f"m{{i}}", "default", 2, b"x") for i in range(100)])
        broker.enqueue([Envelope("late", "mail", 1, b"y", eta=2e9)])
        {ending}
    """)
    assert wrote.returncode == (-signal.SIGKILL if ending else 0), wrote.stderr
    read = run_python(f"""
        from gopherq.brokers import open_broker
        broker = open_broker({url!r})
        stats = broker.stats()
        print(len(broker.reserve(["default"], 1000, 0)), stats["mail"].scheduled)
    """)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == ["100", "1"]


# (e) URL forms.


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    relative = SQLiteBroker("sqlite:///data/rel.db")
    dotted = SQLiteBroker("sqlite:///./dot.db")
    absolute = SQLiteBroker(f"sqlite:///{tmp_path / 'data' / 'abs.db'}")
    assert absolute.url.startswith("sqlite:////")
    monkeypatch.chdir("/")  # resolved when opened: a later chdir keeps the file
    for broker in (relative, dotted, absolute):
        broker.enqueue([envelope("one")])
        broker.close()
    assert {p.name for p in tmp_path.glob("**/*.db")} == {"rel.db", "dot.db", "abs.db"}
    assert relative.path == str(tmp_path / "data" / "rel.db")
    assert dotted.path == str(tmp_path / "dot.db")

    monkeypatch.setenv("HOME", str(tmp_path))
    assert SQLiteBroker("sqlite:///~/home.db").path == str(tmp_path / "home.db")
    backend = SQLiteResultBackend("sqlite:///./x.db")
    assert backend.path == str(Path("/x.db"))


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite://host/q.db", "sqlite:///:memory:", "redis:///x"]
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteBroker(url)


def test_ping_fails_when_the_file_cannot_be_used(tmp_path: Path) -> None:
    with pytest.raises(BrokerUnavailable):
        SQLiteBroker(url_of(tmp_path / "missing-dir" / "q.db")).ping()
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(BrokerUnavailable):
        SQLiteBroker(url_of(tmp_path / "junk.db")).ping()


def test_a_file_from_before_the_cancel_mark_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the messages table as the first release made it
        conn.execute(
            """CREATE TABLE messages (
                seq INTEGER PRIMARY KEY, id TEXT NOT NULL, queue TEXT NOT NULL,
                priority INTEGER NOT NULL, state TEXT NOT NULL, run_at REAL NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 0, deliveries INTEGER NOT NULL DEFAULT 0,
                token TEXT, lease_until REAL, key TEXT, reason TEXT, error TEXT, died REAL,
                body BLOB NOT NULL)"""
        )
        rows = [
            (1, "a", "default", 2, "ready", 0.0, b"A"),
            (2, "b", "default", 2, "ready", 0.0, b"B"),
        ]
        conn.executemany(
            "INSERT INTO messages (seq, id, queue, priority, state, run_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    broker = SQLiteBroker(url_of(path))
    try:
        first, second = broker.reserve(["default"], 2, 0)
        assert (first.id, first.body, first.cancelled) == ("a", b"A", False)
        assert [c.was for c in broker.cancel(["a"])] == [State.STARTED]
        assert broker.cancel_requested([first, second]) == {"a"}
        assert broker.requeue([first, second]) == 2
        marked, plain = broker.reserve(["default"], 2, 0)
        assert (marked.id, marked.cancelled, plain.cancelled) == ("a", True, False)
    finally:
        broker.close()


def test_a_file_from_before_key_holds_is_migrated_on_open(tmp_path: Path) -> None:
    url = url_of(tmp_path / "old.db")
    broker = SQLiteBroker(url)
    with broker._db.write() as conn:  # back to the file of the release before key holds
        conn.execute("DROP INDEX messages_key_hold")
        conn.execute("DROP TABLE finished_keys")
        conn.execute("ALTER TABLE messages DROP COLUMN key_hold")
        conn.execute(SQLiteBroker._INSERT, ("old", "default", 2, "ready", 0.0, "k", b"O"))
    broker.close()
    broker = SQLiteBroker(url)
    try:
        assert broker.ack(broker.reserve(["default"], 1, 0)) == 1
        kept = Envelope("new", "default", 2, b"N", key="k", key_ttl=600)
        assert broker.enqueue([kept]) == ["new"]  # the old message kept no key
        assert broker.ack(broker.reserve(["default"], 1, 0)) == 1
        assert broker.enqueue([Envelope("again", "default", 2, b"A", key="k")]) == ["new"]
    finally:
        broker.close()


# (f) Errors: "try later" (BrokerUnavailable) apart from "broken" (BrokerError).


@pytest.mark.parametrize(
    ("code", "unavailable"),
    [
        (sqlite3.SQLITE_FULL, True),
        (sqlite3.SQLITE_IOERR, True),
        (sqlite3.SQLITE_IOERR | (3 << 8), True),  # SQLITE_IOERR_WRITE: an extended code
        (sqlite3.SQLITE_BUSY, True),
        (sqlite3.SQLITE_LOCKED, True),
        (sqlite3.SQLITE_CANTOPEN, True),
        (sqlite3.SQLITE_CONSTRAINT, False),
        (sqlite3.SQLITE_ERROR, False),
        (None, False),  # an error raised by the sqlite3 module itself
    ],
)
def test_sqlite_errors_map_by_their_result_code(code: int | None, unavailable: bool) -> None:
    exc = sqlite3.OperationalError("some failure")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    mapped = _sqlite_error("/x.db", exc)
    assert isinstance(mapped, BrokerError)
    assert isinstance(mapped, BrokerUnavailable) is unavailable
    assert "some failure" in str(mapped)


def test_a_path_that_cannot_be_opened_names_the_cause(tmp_path: Path) -> None:
    with pytest.raises(BrokerUnavailable) as info:
        SQLiteBroker(url_of(tmp_path)).ping()
    assert str(info.value) == (
        f"SQLite {tmp_path}: unable to open database file: it is a directory, not a file"
    )
    with pytest.raises(BrokerUnavailable, match="cannot create the file: No such file"):
        SQLiteBroker(url_of(tmp_path / "missing" / "q.db")).ping()


def test_a_directory_this_user_cannot_write_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root every directory is writable: what a user sees is checked with os.access.
    (tmp_path / "q.db").touch()
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path))
    exc = sqlite3.OperationalError("attempt to write a readonly database")
    exc.sqlite_errorcode = 1544  # type: ignore[attr-defined]  # SQLITE_READONLY_DIRECTORY
    message = str(_sqlite_error(str(tmp_path / "q.db"), exc))
    assert message == (
        f"SQLite {tmp_path}/q.db: attempt to write a readonly database: the directory "
        f"{tmp_path} is not writable by this user (SQLite creates the -wal and -shm files "
        "beside the database)"
    )


def fill_until_full(broker: SQLiteBroker) -> tuple[list[str], BrokerError]:
    """Enqueue 4 KiB messages until the file is full; the ids stored, and the error."""
    stored: list[str] = []
    for n in range(100_000):
        try:
            broker.enqueue([Envelope(f"m{n}", "default", 2, bytes(4096))])
        except BrokerError as exc:
            return stored, exc
        stored.append(f"m{n}")
    raise AssertionError("the file never filled up")


def test_a_full_database_is_unavailable_not_broken(tmp_path: Path) -> None:
    broker = SQLiteBroker(url_of(tmp_path / "q.db"))
    broker.ping()
    # This connection's cap on the file's size: writes past it fail with SQLITE_FULL.
    pages = broker._db.connection().execute("PRAGMA page_count").fetchone()[0]
    broker._db.connection().execute(f"PRAGMA max_page_count = {pages + 20}")
    stored, error = fill_until_full(broker)
    assert isinstance(error, BrokerUnavailable), error
    assert stored
    # Once there is room again, nothing committed is lost and work goes on.
    broker._db.connection().execute("PRAGMA max_page_count = 1073741823")
    got = broker.reserve(["default"], 1000, 0)
    assert [d.id for d in got] == stored
    assert broker.ack(got) == len(stored)
    broker.enqueue([envelope("after")])
    assert [d.id for d in broker.reserve(["default"], 10, 0)] == ["after"]
    broker.close()


def test_the_first_write_after_a_full_database_empties_the_wal(tmp_path: Path) -> None:
    # SQLite checkpoints on its own only at 1000 WAL pages: on a disk smaller than
    # that, the WAL would keep whatever room is freed, and the disk full.
    broker = SQLiteBroker(url_of(tmp_path / "q.db"))
    broker.ping()
    pages = broker._db.connection().execute("PRAGMA page_count").fetchone()[0]
    broker._db.connection().execute(f"PRAGMA max_page_count = {pages + 20}")
    stored, error = fill_until_full(broker)
    assert isinstance(error, BrokerUnavailable), error
    assert os.path.getsize(tmp_path / "q.db-wal") > 0
    broker._db.connection().execute("PRAGMA max_page_count = 1073741823")
    broker.enqueue([envelope("after")])
    assert os.path.getsize(tmp_path / "q.db-wal") == 0
    assert len(broker.reserve(["default"], 1000, 0)) == len(stored) + 1
    broker.close()


def test_a_full_disk_is_unavailable_not_broken(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        broker = SQLiteBroker(url_of(mount / "q.db"))
        broker.ping()
        stored, error = fill_until_full(broker)
        assert isinstance(error, BrokerUnavailable), error
        assert stored
        # Trying later works: once there is room, nothing committed is lost.
        subprocess.run(["mount", "-o", "remount,size=8M", str(mount)], check=True)
        got = broker.reserve(["default"], 1000, 0)
        assert [d.id for d in got] == stored
        assert broker.ack(got) == len(stored)
        broker.close()
        assert integrity(mount / "q.db") == "ok"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_write_lock_held_too_long_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Database, "BUSY_TIMEOUT", 0.2)
    broker = SQLiteBroker(url_of(tmp_path / "q.db"))
    broker.ping()
    holder = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BrokerUnavailable, match="locked"):
            broker.enqueue([envelope("waits")])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    broker.enqueue([envelope("goes")])
    broker.close()


def test_a_file_with_keys_held_across_queues_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    opened = SQLiteBroker(url_of(path))
    opened.ping()
    opened.close()
    with sqlite3.connect(path) as conn:  # the key index as releases before made it
        conn.execute("DROP INDEX messages_queue_key")
        conn.execute("CREATE UNIQUE INDEX messages_key ON messages (key) WHERE key IS NOT NULL")
        conn.execute(
            "INSERT INTO messages (id, queue, priority, state, run_at, key, body, reason, died)"
            " VALUES ('dead', 'a', 2, 'dead', 0, 'k', x'00', 'REJECTED', 1e12)"
        )
    for _ in range(2):  # a second open finds nothing left to do
        broker = SQLiteBroker(url_of(path))
        fresh = [Envelope("in-a", "a", 2, b"", key="k"), Envelope("in-b", "b", 2, b"", key="k")]
        assert broker.enqueue(fresh) == ["in-a", "in-b"]
        broker.close()
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "messages_key" not in indexes
    assert "messages_queue_key" in indexes


def test_close_waits_for_another_threads_statements(tmp_path: Path) -> None:
    # Closing a connection under a running statement crashes the process: a subprocess.
    program = textwrap.dedent(
        f"""
        import threading
        import time
        from gopherq.stores.sqlite import Database

        db = Database({str(tmp_path / "db.sqlite")!r}, ["CREATE TABLE IF NOT EXISTS t (x)"])
        stop = threading.Event()

        def write():
            while not stop.is_set():
                with db.write() as conn:
                    conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(200)])
                with db.read() as conn:
                    conn.execute("SELECT count(*) FROM t").fetchone()

        writers = [threading.Thread(target=write) for _ in range(2)]
        for thread in writers:
            thread.start()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            db.close()
            time.sleep(0.0005)
        stop.set()
        for thread in writers:
            thread.join()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", program],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, b"ok"), done.stderr.decode()[-2000:]


def test_the_periodic_tidy_deletes_ended_rate_holds(tmp_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{tmp_path / 'q.db'}")
    broker.set_rate_limit("tasks.limited", "5/s")
    broker.hold_rate("tasks.limited", 0.1)
    broker.hold_rate("tasks.held", 0.1)
    broker.hold_rate("tasks.later", 60.0)
    time.sleep(0.2)
    broker.recover()
    with sqlite3.connect(tmp_path / "q.db") as conn:
        rows = conn.execute("SELECT task, rate, hold_until IS NULL FROM rate_limits ORDER BY task")
        assert rows.fetchall() == [("tasks.later", None, 0), ("tasks.limited", "5/s", 1)]
    broker.close()
