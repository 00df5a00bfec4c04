"""The protocol for producers in other languages (docs/protocol.md): the page
against the code, the ``gopherq protocol`` commands, and the SQLite enqueue done
by hand as the page says. (The Redis script: tests/test_redis_broker.py; a whole
producer in Node.js: tests/e2e/test_node_producer.py.)"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import msgpack
from click.testing import CliRunner

from gopherq import protocol
from gopherq.brokers import Envelope
from gopherq.brokers import redis as redis_broker
from gopherq.brokers.redis import RedisBroker
from gopherq.brokers.sqlite import SQLiteBroker
from gopherq.cli import main
from gopherq.message import ENVELOPE_VERSION
from gopherq.results.base import JobRecord
from gopherq.results.redis import RedisResultBackend
from gopherq.results.sqlite import SQLiteResultBackend
from gopherq.states import State

DOCS = Path(__file__).parent.parent / "docs"
PAGE = (DOCS / "protocol.md").read_text()


def flat(text: str) -> str:
    """SQL with its whitespace runs collapsed, for comparing the page with the code."""
    return re.sub(r"\s+", " ", text).replace("( ", "(").replace(" )", ")").strip()


def test_the_page_states_the_version() -> None:
    assert protocol.PROTOCOL_VERSION == 1 == ENVELOPE_VERSION
    assert "**protocol version 1**" in PAGE


def test_the_pages_sql_is_the_brokers() -> None:
    page = flat(PAGE)
    for statement in (
        SQLiteBroker._INSERT,
        SQLiteBroker._KEY_HOLDER,
        "INSERT OR IGNORE INTO queues (name) VALUES (?)",
        f"SELECT record FROM results WHERE id = ? AND {SQLiteResultBackend._LIVE}",
    ):
        assert flat(statement) in page, statement
    # Every column the page has a producer write exists, with the type it says.
    columns = dict(re.findall(r"^\| `(?:messages|queues)\.(\w+)` \| (\w+) \|", PAGE, re.M))
    schema = flat(" ".join(SQLiteBroker.SCHEMA[:2]))
    assert set(columns) == {"id", "queue", "priority", "state", "run_at", "key", "body", "name"}
    for column, kind in columns.items():
        assert f"{column} {kind}" in schema, column


def test_the_pages_redis_keys_are_the_brokers() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0?prefix=P")  # never connects
    backend = RedisResultBackend("redis://127.0.0.1:1/0?prefix=P")
    assert f"`SADD    {broker._queues_key}  <queue>`".replace("`", "") in PAGE
    assert f"EVALSHA <sha1 of the script>  1  {broker._base('<queue>')}  " in PAGE
    assert f"`GET {backend._key('<id>')}`" in PAGE
    envelope = Envelope("id", "mail", 1, b"body", eta=1.5, key="k")
    assert redis_broker._enqueue_fields(envelope) == ("id", 1, "1.5", "k", b"body")
    assert "| `ARGV` | 5 per message" in PAGE
    assert redis_broker.ENQUEUE_CHUNK == 1000 and "at most 1,000 messages per call" in PAGE


def test_the_pages_record_fields_are_the_records() -> None:
    fields = set(re.findall(r"^\| `(\w+)` \| \w+ \|", PAGE.split("## Job records")[1], re.M))
    assert fields == set(JobRecord.__dataclass_fields__)
    states = re.search(r"\| `state` \| str \| (.*) \(see", PAGE)
    assert states is not None
    assert set(re.findall(r"`(\w+)`", states[1])) == set(State) - {State.PENDING}


def test_the_messages_page_points_here() -> None:
    assert "(protocol.md)" in (DOCS / "messages.md").read_text()
    assert "(docs/protocol.md)" in (DOCS.parent / "README.md").read_text()


def test_the_protocol_commands_print_what_the_release_runs() -> None:
    runner = CliRunner()
    script = runner.invoke(main, ["protocol", "redis-enqueue-script"])
    assert script.exit_code == 0 and script.output == protocol.redis_enqueue_script()
    assert script.output.startswith("#!lua\n")
    version = runner.invoke(main, ["protocol", "version"])
    assert (version.exit_code, version.output) == (0, "1\n")
    schema = runner.invoke(main, ["protocol", "sqlite-schema"])
    assert schema.exit_code == 0
    assert [flat(s) for s in schema.output.split(";\n") if s] == [
        flat(s) for s in protocol.sqlite_schema()
    ]
    db = sqlite3.connect(":memory:")
    db.executescript(schema.output)  # runs as printed
    assert {"messages", "queues", "results", "marks"} <= {
        row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }


def test_a_foreign_producer_enqueues_on_sqlite_as_the_page_says(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    broker = SQLiteBroker(url)
    broker.stats()  # a gopherq process creates the file and its tables
    db = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    db.execute("PRAGMA busy_timeout = 5000")

    def enqueue(id: str, priority: int, eta: float | None, key: str | None) -> str:
        """One enqueue transaction of docs/protocol.md; the id the message stands for."""
        now = time.time()
        state, run_at = ("scheduled", eta) if eta is not None and eta > now else ("ready", now)
        body = msgpack.packb({"v": 1, "id": id, "task": "t", "priority": priority})
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", ("mail",))
        inserted = db.execute(
            """INSERT INTO messages (id, queue, priority, state, run_at, key, body)
            VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            (id, "mail", priority, state, run_at, key, body),
        ).rowcount
        holder = None
        if not inserted and key is not None:
            holder = db.execute(
                "SELECT id FROM messages WHERE queue = ? AND key = ? AND state != 'dead'",
                ("mail", key),
            ).fetchone()
        db.execute("COMMIT")
        return id if holder is None else str(holder[0])

    try:
        assert enqueue("a", 3, None, None) == "a"
        assert enqueue("b", 0, time.time() - 1, "k") == "b"  # an eta passed: ready
        assert enqueue("c", 2, time.time() + 3600, None) == "c"
        assert enqueue("d", 1, None, "k") == "b"  # the key is held
        assert enqueue("a", 2, None, None) == "a"  # stored before: left alone
        assert broker.stats()["mail"].scheduled == 1
        taken = broker.reserve(["mail"], 10, 0)
        assert [(d.id, d.priority) for d in taken] == [("b", 0), ("a", 3)]
        assert broker.locate("c") is State.SCHEDULED
    finally:
        db.close()
        broker.close()
