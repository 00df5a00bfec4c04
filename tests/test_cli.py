"""The ``gopherq`` command, through click's CliRunner, on every broker kind.

Each test writes an app module to its own temporary directory, runs there,
and points ``GOPHERQ_BROKER_URL`` at a private store. Within one test every
command loads the same module object, so even ``memory://`` keeps its state
from one command to the next.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import broker_url

from gopherq import GopherQ, State
from gopherq import cli as cli_module
from gopherq import settings as settings_module
from gopherq.brokers import Envelope
from gopherq.display import to_json
from gopherq.errors import BrokerError, BrokerUnavailable
from gopherq.loader import load_app
from gopherq.redaction import redact_url
from gopherq.results.base import JobRecord

APP_SOURCE = '''
from gopherq import GopherQ

app = GopherQ("cli-test")


@app.task(name="add", queue="math", priority="high", retries=2)
def add(x: int, y: int) -> int:
    """Add two numbers.

    A second paragraph that the task list does not show.
    """
    return x + y


@app.task(name="boom")
def boom() -> None:
    raise ValueError("nope")


@app.task
def greet(name: str) -> str:
    return f"hello {name}"
'''


T = 1_735_725_600.0  # 2025-01-01 10:00 UTC


class Cli:
    """Runs ``gopherq`` commands against one test's app module."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, app: bool = True) -> Result:
        argv = ["-A", self.module, *args] if app else list(args)
        return self.runner.invoke(cli_module.main, argv, input=input)

    @property
    def app(self) -> GopherQ:
        """The very app object the commands use."""
        return load_app(self.module)


@pytest.fixture
def cli(broker_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    module = f"cliapp_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(APP_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader adds the cwd
    for var in ("GOPHERQ_APP", "GOPHERQ_EAGER", "GOPHERQ_RESULT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOPHERQ_BROKER_URL", broker_url(broker_kind, tmp_path))
    runner = Cli(module)
    yield runner
    if module in sys.modules:
        sys.modules.pop(module).app.close()


def ok(result: Result) -> str:
    """Assert the command succeeded; return its standard output."""
    assert result.exit_code == 0, result.output
    return result.stdout


def failed(result: Result, code: int = 1) -> str:
    """Assert the command failed cleanly with ``code``; return its one-line error."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.stderr.strip().splitlines()[-1]


def make_dead(app: GopherQ, queue: str = "default", reason: str = "MAX_RETRIES") -> str:
    """Send ``add`` to ``queue`` and dead-letter it; return its id."""
    id = app.send_task("add", [1, 2], queue=queue).id
    (delivery,) = app.broker.reserve([queue], 1, 1.0)
    assert app.broker.dead(delivery, reason, "ValueError: boom")
    return id


# The app option.


def test_app_option_before_on_and_from_environment(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "add" in ok(cli("tasks"))
    assert "add" in ok(cli("tasks", "-A", cli.module, app=False))
    monkeypatch.setenv("GOPHERQ_APP", cli.module)
    assert "add" in ok(cli("tasks", app=False))
    # The option given on the command line wins over the environment.
    monkeypatch.setenv("GOPHERQ_APP", "no_such_module")
    assert "add" in ok(cli("tasks", "-A", cli.module, app=False))
    assert "add" in ok(cli("tasks"))


def test_missing_app_is_a_usage_error(cli: Cli) -> None:
    assert "no app given" in failed(cli("stats", app=False), code=2)


def test_unknown_module_is_one_line(cli: Cli) -> None:
    error = failed(cli("stats", "-A", "no_such_module_here", app=False))
    assert error == "Error: cannot import app module 'no_such_module_here': " + (
        "No module named 'no_such_module_here'"
    )


def test_app_module_that_fails_to_import(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "broken_app_mod.py").write_text("raise RuntimeError('config missing')\n")
    error = failed(cli("stats", "-A", "broken_app_mod", app=False))
    assert error == "Error: cannot load app 'broken_app_mod': RuntimeError: config missing"


# tasks


def test_tasks_table_and_json(cli: Cli) -> None:
    lines = ok(cli("tasks")).splitlines()
    assert lines[0].split() == ["NAME", "QUEUE", "PRIORITY", "RETRIES", "DESCRIPTION"]
    assert lines[1].split() == ["add", "math", "high", "2", "Add", "two", "numbers."]
    assert [line.split()[0] for line in lines[1:]] == ["add", "boom", f"{cli.module}.greet"]
    listed = json.loads(ok(cli("tasks", "--json")))
    assert {k: listed[0][k] for k in ("name", "queue", "priority", "retries", "description")} == {
        "name": "add",
        "queue": "math",
        "priority": "high",
        "retries": 2,
        "description": "Add two numbers.",
    }
    assert listed[0]["doc"].startswith("Add two numbers.\n\nA second paragraph")
    assert listed[0]["options"]["autoretry_for"] == ["builtins.Exception"]
    assert listed[1]["description"] == ""


# submit and status


def test_submit_prints_the_id_and_sends_with_options(cli: Cli) -> None:
    out = ok(cli("submit", "add", "--args", "[2]", "--kwargs", '{"y": 3}', "--priority", "0"))
    id = out.strip()
    assert cli.app.result(id).state is State.QUEUED
    (delivery,) = cli.app.broker.reserve(["math"], 10, 1.0)
    message = cli.app.codec.decode(delivery.body)
    assert (delivery.id, delivery.priority) == (id, 0)
    assert (message.task, message.args, message.kwargs) == ("add", [2], {"y": 3})


def test_submit_queue_and_countdown(cli: Cli) -> None:
    id = ok(cli("submit", "add", "--args", "[1, 2]", "--queue", "q2", "--countdown", "60"))
    stats = {q["name"]: q for q in json.loads(ok(cli("stats", "--json")))}
    assert stats["q2"]["scheduled"] == 1
    assert json.loads(ok(cli("status", id.strip(), "--json")))["state"] == "SCHEDULED"


def test_submit_with_a_held_key_prints_the_first_id(cli: Cli) -> None:
    first = ok(cli("submit", "add", "--args", "[1, 2]", "--key", "k", "--key-ttl", "60"))
    assert ok(cli("submit", "add", "--args", "[3, 4]", "--key", "k")) == first
    assert json.loads(ok(cli("stats", "--json")))[0]["ready"] == 1
    error = failed(cli("submit", "add", "--args", "[1, 2]", "--key", "j", "--key-ttl", "inf"))
    assert (
        error == "Error: send option key_ttl must be a finite number of seconds, 0 or more, not inf"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key-ttl", "-1"], "-1.0 is not in the range x>=0"),
        (["--args", "[1,"], "not valid JSON"),
        (["--args", '{"x": 1}'], "expected a JSON array"),
        (["--kwargs", "[1]"], "expected a JSON object"),
        (["--priority", "urgent"], "'urgent' is not one of"),
    ],
)
def test_submit_rejects_bad_options(cli: Cli, args: list[str], message: str) -> None:
    result = cli("submit", "add", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert ok(cli("stats")) == "no queues yet\n"


def test_submit_arguments_that_do_not_fit(cli: Cli) -> None:
    error = failed(cli("submit", "add", "--args", "[1]"))
    assert error == "Error: add: missing a required argument: 'y'"
    assert ok(cli("stats")) == "no queues yet\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--countdown", "inf"], "Error: countdown is not a finite number: inf"),
        (["--countdown", "1e10"], "beyond the max_eta setting of 31536000"),
        (["--queue", "q" * 200], "Error: send option queue is 200 characters long, above"),
    ],
)
def test_submit_options_outside_the_envelope_limits(
    cli: Cli, args: list[str], message: str
) -> None:
    assert message in failed(cli("submit", "add", "--args", "[1, 2]", *args))
    assert "task name is 300 characters long" in failed(cli("submit", "n" * 300))
    assert ok(cli("stats")) == "no queues yet\n"


def test_submit_unregistered_name_warns_and_suggests(cli: Cli) -> None:
    result = cli("submit", "greet", "--args", '["ann"]')
    assert result.exit_code == 0
    assert f"did you mean '{cli.module}.greet'?" in result.stderr
    assert cli.app.result(result.stdout.strip()).state is State.QUEUED


def test_submit_wait_prints_the_result(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPHERQ_EAGER", "1")
    id, value = ok(cli("submit", "add", "--args", "[2, 3]", "--wait")).splitlines()
    assert json.loads(value) == 5
    status = json.loads(ok(cli("status", id, "--json")))
    assert (status["state"], status["result"], status["task"]) == ("SUCCEEDED", 5, "add")
    plain = ok(cli("status", id))
    assert "state:     SUCCEEDED" in plain
    assert "result:    5" in plain


def test_submit_wait_on_a_failing_task(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPHERQ_EAGER", "1")
    result = cli("submit", "boom", "--wait")
    id = result.stdout.strip()
    assert failed(result) == f"Error: task {id} failed: ValueError: nope"
    status = json.loads(ok(cli("status", id, "--json")))
    assert status["state"] == "FAILED"
    assert status["error"]["type"] == "ValueError"
    plain = ok(cli("status", id))
    assert "error:     ValueError: nope" in plain
    assert "Traceback (most recent call last)" in plain


def test_submit_wait_times_out(cli: Cli) -> None:
    result = cli("submit", "add", "--args", "[1, 2]", "--wait", "--timeout", "0.2")
    assert "did not finish within 0.2s (state QUEUED)" in failed(result)


def test_status_of_an_unknown_id(cli: Cli) -> None:
    assert json.loads(ok(cli("status", "nope", "--json"))) == {"id": "nope", "state": "PENDING"}
    assert ok(cli("status", "nope")) == "id:     nope\nstate:  PENDING\n"


def test_status_json_bytes_and_datetimes_and_zoned_times(cli: Cli) -> None:
    app = cli.app
    id = app.send_task("add", [1, 2]).id
    value = {"raw": b"\xff", "at": dt.datetime(2025, 1, 1), "day": dt.date(2025, 1, 2)}
    record = JobRecord(id, "add", State.SUCCEEDED, "math", result=app.codec.pack(value))
    app.backend.store([replace(record, attempts=1, created=T, started=T, finished=T + 1)])
    info = json.loads(ok(cli("status", id, "--json")))
    assert info["result"] == {
        "raw": {"$bytes": "/w=="},
        "at": "2025-01-01T00:00:00",
        "day": "2025-01-02",
    }
    assert info["created"] == T  # timestamps stay unix seconds in JSON
    text = ok(cli("status", id))
    zoned = dt.datetime.fromtimestamp(T).astimezone().isoformat(sep=" ")
    assert f"created:   {zoned}" in text
    assert '"$bytes": "/w=="' in text
    assert zoned in ok(cli("jobs"))


def test_json_for_values_json_lacks() -> None:
    value = {b"k": (1, {2}), 3: uuid.UUID(int=1), (1, 2): dt.timedelta(seconds=1.5)}
    assert json.loads(to_json(value)) == {
        '{"$bytes": "aw=="}': [1, [2]],
        "3": "00000000-0000-0000-0000-000000000001",
        "[1, 2]": 1.5,
    }


# stats, pause, resume, purge


def test_stats_pause_and_resume(cli: Cli) -> None:
    cli.app.send_task("add", [1, 2])
    cli.app.send_task("add", [1, 2], queue="slow", countdown=60)
    assert ok(cli("pause", "slow")) == "paused slow\n"
    lines = ok(cli("stats")).splitlines()
    assert lines[0].split() == ["QUEUE", "READY", "SCHEDULED", "RUNNING", "DEAD", "PAUSED"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["math"] == ["1", "0", "0", "0", "no"]
    assert rows["slow"] == ["0", "1", "0", "0", "yes"]
    assert ok(cli("resume", "slow")) == "resumed slow\n"
    stats = {q["name"]: q for q in json.loads(ok(cli("stats", "--json")))}
    assert stats["slow"] == {
        "name": "slow",
        "ready": 0,
        "scheduled": 1,
        "running": 0,
        "dead": 0,
        "paused": False,
    }


def test_purge_asks_and_refuses_off_a_terminal(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        cli.app.send_task("add", [1, 2])
    assert "pass --yes" in failed(cli("purge", "math"), code=2)
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)
    assert cli("purge", "math", input="n\n").exit_code == 1
    assert cli.app.broker.stats()["math"].ready == 3
    assert ok(cli("purge", "math", input="y\n")).endswith("deleted 3\n")
    cli.app.send_task("add", [1, 2])
    assert ok(cli("purge", "math", "--yes")) == "deleted 1\n"
    assert cli.app.broker.stats()["math"].ready == 0


def test_purge_all_queues(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.app.send_task("add", [1, 2])  # to its queue, math
    cli.app.send_task("greet", ["ann"], queue="elsewhere")
    cli.app.send_task("greet", ["bob"], countdown=60)  # scheduled, in default
    assert "pass --yes" in failed(cli("purge", "--all"), code=2)
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)
    answer = cli("purge", "--all", input="n\n")
    assert answer.exit_code == 1
    assert "(default, elsewhere, math)" in answer.output
    output = ok(cli("purge", "--all", input="y\n"))
    assert output.endswith("default: deleted 1\nelsewhere: deleted 1\nmath: deleted 1\ndeleted 3\n")
    assert all(q.ready == q.scheduled == 0 for q in cli.app.broker.stats().values())
    assert "QUEUE or --all" in failed(cli("purge"), code=2)
    assert "QUEUE or --all" in failed(cli("purge", "math", "--all"), code=2)


# dead letters


def test_dead_list(cli: Cli) -> None:
    first = make_dead(cli.app, "default")
    second = make_dead(cli.app, "other", reason="BAD_ARGS")
    cli.app.broker.enqueue([Envelope("garbage", "default", 2, b"\xc1not msgpack")])
    (delivery,) = cli.app.broker.reserve(["default"], 1, 1.0)
    cli.app.broker.dead(delivery, "DECODE_ERROR", "DecodeError: not valid msgpack")
    letters = json.loads(ok(cli("dead", "list", "--json")))
    assert [d["id"] for d in letters] == ["garbage", second, first]
    assert letters[0]["task"] is None
    assert {k: letters[1][k] for k in ("queue", "task", "reason", "error", "attempts")} == {
        "queue": "other",
        "task": "add",
        "reason": "BAD_ARGS",
        "error": "ValueError: boom",
        "attempts": 1,
    }
    assert time.time() - 60 < letters[1]["died"] <= time.time()
    lines = ok(cli("dead", "list")).splitlines()
    assert lines[0].split() == ["ID", "QUEUE", "TASK", "REASON", "ATTEMPTS", "DIED", "ERROR"]
    assert lines[1].split()[:5] == ["garbage", "default", "-", "DECODE_ERROR", "1"]
    only = json.loads(ok(cli("dead", "list", "--queue", "other", "--json")))
    assert [d["id"] for d in only] == [second]
    assert len(json.loads(ok(cli("dead", "list", "--limit", "1", "--json")))) == 1
    assert ok(cli("dead", "list", "--queue", "none")) == "no dead letters\n"


def test_dead_retry(cli: Cli) -> None:
    id = make_dead(cli.app)
    assert ok(cli("dead", "retry", id)) == "requeued 1 of 1\n"
    assert cli.app.result(id).state is State.QUEUED
    result = cli("dead", "retry", id, "missing")
    assert result.stdout == "requeued 0 of 2\n"
    assert failed(result) == "Error: 2 of the ids are not dead letters"


def test_cancel_queued_running_and_unknown(cli: Cli) -> None:
    app = cli.app
    queued = app.send_task("greet", ["a"]).id
    running = app.send_task("add", [1, 2]).id
    app.broker.reserve(["math"], 1, 1.0)
    result = cli("cancel", queued, running, "missing")
    assert result.stdout.splitlines() == [
        f"{queued}  cancelled: it will not run",
        f"{running}  running: its worker stops it (cancel_grace, then kill)",
        "missing  not found: finished, dead-lettered or unknown",
    ]
    assert failed(result) == "Error: 1 of 3 not cancelled: not queued, scheduled or running"
    assert app.result(queued).state is State.CANCELLED
    assert json.loads(ok(cli("cancel", "--json", running))) == [
        {"id": running, "outcome": "stopping"}
    ]


def test_dead_retry_all_and_purge_by_queue(cli: Cli) -> None:
    kept, requeued = make_dead(cli.app, "a"), make_dead(cli.app, "b")
    assert "pass --yes" in failed(cli("dead", "retry-all"), code=2)
    assert ok(cli("dead", "retry-all", "--queue", "b", "--yes")) == "requeued 1\n"
    assert cli.app.result(requeued).state is State.QUEUED
    assert cli.app.result(kept).state is State.DEAD
    assert "pass --yes" in failed(cli("dead", "purge"), code=2)
    assert ok(cli("dead", "purge", "--queue", "b", "-y")) == "deleted 0\n"
    assert ok(cli("dead", "purge", "-y")) == "deleted 1\n"
    assert cli.app.result(kept).state is State.PENDING


def test_dead_by_reason(cli: Cli) -> None:
    bad = make_dead(cli.app, "a", reason="BAD_ARGS")
    failed_a, failed_b = make_dead(cli.app, "a"), make_dead(cli.app, "b")
    listed = json.loads(ok(cli("dead", "list", "--reason", "bad_args", "--json")))
    assert [d["id"] for d in listed] == [bad]
    assert "'BORED' is not one of" in failed(cli("dead", "list", "--reason", "BORED"), code=2)
    retried = cli("dead", "retry-all", "--reason", "BAD_ARGS", "--queue", "b", "-y")
    assert ok(retried) == "requeued 0\n"
    assert ok(cli("dead", "retry-all", "--reason", "BAD_ARGS", "-y")) == "requeued 1\n"
    assert cli.app.result(bad).state is State.QUEUED
    reason = cli.app.broker.dead_letters("a")[0].reason
    assert ok(cli("dead", "purge", "--reason", reason, "--queue", "a", "-y")) == "deleted 1\n"
    assert cli.app.result(failed_a).state is State.PENDING
    assert cli.app.result(failed_b).state is State.DEAD


def test_dead_replay(cli: Cli) -> None:
    id = make_dead(cli.app)
    new = ok(cli("dead", "replay", id, "--args", "[5, 6]")).strip()
    assert new != id and cli.app.result(id).state is State.PENDING
    (delivery,) = cli.app.broker.reserve(["default"], 1, 1.0)
    message = cli.app.codec.decode(delivery.body)
    assert (message.id, message.task, message.args) == (new, "add", [5, 6])
    assert "no dead letter" in failed(cli("dead", "replay", id))
    assert "JSON array" in failed(cli("dead", "replay", id, "--args", "{}"), code=2)


def test_workers(cli: Cli) -> None:
    from gopherq.worker.presence import Presence
    from gopherq.worker.slots import Holding

    assert ok(cli("workers")) == "no workers sent a heartbeat lately\n"
    presence = Presence(cli.app, "host:1", 2, ["default"])
    presence.start()
    presence.beat([("host:2", Holding(processed=4))])
    cli.app.events.flush()
    lines = ok(cli("workers")).splitlines()
    assert lines[0].split()[:3] == ["WORKER", "ALIVE", "LAST"]
    assert lines[1].split()[:2] == ["host:1", "yes"]
    [worker] = json.loads(ok(cli("workers", "--json")))
    assert (worker["name"], worker["processed"], worker["current"]) == ("host:1", 4, [])


# health and errors


def test_health(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ok(cli("health")).startswith("ok: ")
    report = json.loads(ok(cli("health", "--json")))
    assert report["ok"] is True
    assert report["error"] == ""

    def down() -> None:
        raise BrokerUnavailable("connection refused")

    monkeypatch.setattr(cli.app.broker, "ping", down)
    assert failed(cli("health")).endswith("does not answer: connection refused")
    result = cli("health", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == "connection refused"


def test_health_of_an_unreachable_sqlite_file(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOPHERQ_BROKER_URL", f"sqlite:///{tmp_path}/missing/q.db")
    assert "does not answer" in failed(cli("health"))
    assert failed(cli("stats")).startswith("Error: ")


def test_broker_errors_are_one_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise BrokerError("database is locked\nsecond line")

    monkeypatch.setattr(cli.app.broker, "stats", broken)
    assert failed(cli("stats")) == "Error: database is locked"


# Start-up options and misconfiguration.


@pytest.fixture
def worker_options(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options ``gopherq worker`` gives ``Worker`` (which is not run)."""
    from gopherq import worker as worker_package

    seen: dict[str, Any] = {}

    class FakeWorker:
        def __init__(self, app: GopherQ, **options: Any) -> None:
            seen.update(options)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(worker_package, "Worker", FakeWorker)
    return seen


@pytest.mark.parametrize(
    "args",
    [
        ("-c", "0"),
        ("-c", "-2"),
        ("--shutdown-timeout", "-5"),
        ("--connect-timeout", "-1"),
        ("--max-tasks-per-child", "0"),
        ("-l", "bogus"),
        ("--log-format", "xml"),
    ],
)
def test_bad_worker_options_are_usage_errors(
    cli: Cli, worker_options: dict[str, Any], args: tuple[str, ...]
) -> None:
    error = failed(cli("worker", *args), code=2)
    assert error.startswith("Error: Invalid value for"), error
    assert not worker_options  # no worker was made


def test_queue_weights_and_strict_reach_the_worker(
    cli: Cli, worker_options: dict[str, Any]
) -> None:
    ok(cli("worker", "-Q", "high:3,default:2", "-Q", "low"))
    assert worker_options["queues"] == {"high": 3, "default": 2, "low": None}
    assert worker_options["strict"] is False
    ok(cli("worker", "-Q", "a,b", "--strict"))
    assert worker_options["queues"] == ["a", "b"]
    assert worker_options["strict"] is True


@pytest.mark.parametrize("item", ["high:0", "high:x", "high:-1", "high:", ":3", "high:1.5"])
def test_a_bad_queue_weight_is_one_line_naming_it(
    cli: Cli, worker_options: dict[str, Any], item: str
) -> None:
    error = failed(cli("worker", "-Q", f"default,{item}"), code=1)
    assert error == (
        f"Error: queue {item!r}: expected NAME or NAME:WEIGHT with a whole number WEIGHT "
        "from 1 up (-Q high:3,low:1)"
    )
    assert not worker_options  # no worker was made


def test_repeated_queue_options_merge(cli: Cli, worker_options: dict[str, Any]) -> None:
    ok(cli("worker", "-Q", "a,b", "-Q", "c", "-Q", " a ,,d", "-l", "warning"))
    assert worker_options["queues"] == ["a", "b", "c", "d"]
    assert worker_options["loglevel"] == "WARNING"
    ok(cli("worker", "--connect-timeout", "2.5"))
    assert worker_options["queues"] is None  # the app's queues
    assert worker_options["connect_timeout"] == 2.5
    assert worker_options["log_format"] is None  # the setting's


def test_log_format_option(cli: Cli, worker_options: dict[str, Any]) -> None:
    ok(cli("worker", "--log-format", "JSON"))
    assert worker_options["log_format"] == "json"


def test_pause_of_an_unknown_queue_refuses_unless_create(cli: Cli) -> None:
    error = failed(cli("pause", "mathh"))
    assert "unknown queue 'mathh'" in error
    assert "--create" in error
    assert "mathh" not in cli.app.broker.stats()
    assert ok(cli("pause", "math")) == "paused math\n"  # a task is declared on it
    assert ok(cli("pause", "mathh", "--create")) == "paused mathh\n"
    assert cli.app.broker.stats()["mathh"].paused
    assert ok(cli("pause", "mathh")) == "paused mathh\n"  # the broker knows it now


def test_submit_to_a_queue_nothing_knows_warns(cli: Cli) -> None:
    result = cli("submit", "add", "--args", "[1, 2]", "--queue", "nobody")
    assert result.exit_code == 0, result.output
    assert "warning: no worker of app cli-test consumes queue 'nobody'" in result.stderr
    quiet = cli("submit", "add", "--args", "[1, 2]", "--queue", "math")
    assert quiet.stderr == ""


def test_submit_wait_without_a_worker_names_the_queue(cli: Cli) -> None:
    result = cli("submit", "add", "--args", "[1, 2]", "--wait", "--timeout", "0.2")
    error = failed(result)
    assert "did not finish within 0.2s (state QUEUED)" in error
    assert "no worker may be consuming queue 'math'" in error
    assert "give up after S seconds. [default: 60.0;" in " ".join(
        ok(cli("submit", "--help")).split()
    )


def test_stats_and_health_show_the_absolute_broker(cli: Cli) -> None:
    url = cli.app.broker_url
    result = cli("stats")
    assert result.stdout == "no queues yet\n"
    assert result.stderr == f"broker: {redact_url(url)}\n"
    assert redact_url(url) in ok(cli("health"))


def test_an_unknown_gopherq_variable_does_not_break_commands(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOPHERQ_PREFECH", "3")  # another tool's, or a typo
    monkeypatch.setattr(settings_module, "_warned", set())
    if cli.module in sys.modules:
        del sys.modules[cli.module]  # the app reads the environment again
    assert "add" in ok(cli("tasks"))


# End to end: a real worker on SQLite.


@pytest.mark.e2e
def test_submit_wait_with_a_real_worker(tmp_path: Path) -> None:
    (tmp_path / "e2e_cli_app.py").write_text(APP_SOURCE)
    env = {
        **os.environ,
        "GOPHERQ_BROKER_URL": broker_url("sqlite", tmp_path),
        "GOPHERQ_APP": "e2e_cli_app",
    }
    env.pop("GOPHERQ_EAGER", None)
    gopherq = [sys.executable, "-m", "gopherq"]
    worker = subprocess.Popen(
        [*gopherq, "worker", "-c", "1", "-Q", "math,default"], cwd=tmp_path, env=env
    )
    try:
        done = subprocess.run(
            [*gopherq, "submit", "add", "--args", "[20, 22]", "--wait", "--timeout", "30"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        id, value = done.stdout.splitlines()
        assert value == "42"
        status = subprocess.run(
            [*gopherq, "status", id, "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            check=True,
        )
        assert json.loads(status.stdout)["state"] == "SUCCEEDED"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


# What Celery users type.


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    result = CliRunner().invoke(cli_module.main, [flag])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"gopherq {importlib.metadata.version('gopherq')}\n"


@pytest.mark.parametrize(
    ("command", "hint"),
    [("inspect", "'stats', 'jobs' and 'status ID'"), ("control", "'cancel'"), ("call", "submit")],
)
def test_celery_subcommands_say_what_gopherq_has(command: str, hint: str) -> None:
    result = CliRunner().invoke(cli_module.main, [command, "active"])
    assert result.exit_code == 2
    assert f"no command {command!r} (Celery's): gopherq has" in result.stderr
    assert hint in result.stderr


@pytest.mark.parametrize(("option", "hint"), [("-P", "prefork"), ("--autoscale", "-c")])
def test_celery_worker_options_say_what_gopherq_has(cli: Cli, option: str, hint: str) -> None:
    error = failed(cli("worker", option, "x"), code=2)
    assert f"({option} is Celery's: gopherq has" in error
    assert hint in error


def test_worker_takes_beat_flag(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []

    class FakeWorker:
        def __init__(self, app: GopherQ, **options: Any) -> None:
            made.append(options)

        def run(self) -> int:
            return 0

    monkeypatch.setattr("gopherq.worker.Worker", FakeWorker)
    ok(cli("worker", "-B"))
    ok(cli("worker"))
    assert [options["beat"] for options in made] == [True, False]
