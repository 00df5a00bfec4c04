"""``gopherq jobs`` and ``gopherq events``, on memory:// and SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import Cli, cli, failed, ok

from gopherq import State, current_task
from gopherq.result import AsyncResult
from gopherq.results.base import JobRecord
from gopherq.worker import Consumer

__all__ = ["cli"]  # the fixture, with the broker kinds below


@pytest.fixture(params=["memory", "sqlite"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_all(cli: Cli) -> list[str]:
    """Send add, boom and add; run them in-process; return their ids."""
    app = cli.app
    ids = [
        app.send_task(name, args).id
        for name, args in [("add", [1, 2]), ("boom", []), ("add", [3, 4])]
    ]
    Consumer(app, ["math", "default"], burst=True, reserve_timeout=0.1).run()
    return ids


def test_jobs(cli: Cli) -> None:
    first, boom, last = run_all(cli)
    lines = ok(cli("jobs")).splitlines()
    assert lines[0].split()[:5] == ["ID", "TASK", "STATE", "QUEUE", "ATTEMPTS"]
    assert [line.split()[0] for line in lines[1:]] == [last, boom, first]
    assert "ValueError: nope" in lines[2]
    assert [line.split()[0] for line in ok(cli("jobs", "--state", "failed")).splitlines()[1:]] == [
        boom
    ]
    records = json.loads(ok(cli("jobs", "--task", "add", "--limit", "1", "--json")))
    assert [(r["id"], r["result"], r["state"]) for r in records] == [(last, 7, "SUCCEEDED")]
    assert ok(cli("jobs", "--queue", "nowhere")).strip() == "no jobs"
    assert "Invalid value" in failed(cli("jobs", "--state", "done"), code=2)


def test_a_task_whose_worker_died_reads_queued_everywhere(cli: Cli) -> None:
    """Its record still says STARTED on the dead worker; the broker has it ready again."""
    app = cli.app
    id = app.send_task("add", [1, 2]).id
    (delivery,) = app.broker.reserve(["math"], 1, 1.0)
    app.backend.store([JobRecord(id, "add", State.STARTED, "math", attempts=1, worker="dead@host")])
    assert app.broker.requeue([delivery], started=True) == 1  # what recovery does
    assert AsyncResult(id, app).state is State.QUEUED
    assert json.loads(ok(cli("status", id, "--json")))["state"] == "QUEUED"
    assert "state:" in (text := ok(cli("status", id))) and "QUEUED" in text
    (row,) = ok(cli("jobs")).splitlines()[1:]
    assert row.split()[:3] == [id, "add", "QUEUED"]
    assert json.loads(ok(cli("jobs", "--json")))[0]["state"] == "QUEUED"
    assert ok(cli("jobs", "--state", "started")).strip() == "no jobs"


def test_events(cli: Cli) -> None:
    first, boom, last = run_all(cli)
    text = ok(cli("events", "-n", "2")).splitlines()
    assert len(text) == 2  # the runs of add (high priority) came first
    assert "task-started" in text[0] and boom in text[0] and "worker=" in text[0]
    assert "task-failed" in text[1] and "error_type=ValueError error=nope" in text[1]
    lines = [json.loads(line) for line in ok(cli("events", "--since", "0", "--json")).splitlines()]
    assert [(e["type"], e["id"]) for e in lines[:3]] == [
        ("task-enqueued", id) for id in (first, boom, last)
    ]
    assert [int(e["cursor"]) for e in lines] == sorted(int(e["cursor"]) for e in lines)
    failed_only = ok(cli("events", "--since", "0", "-t", "task-failed", "--json")).splitlines()
    assert [json.loads(line)["id"] for line in failed_only] == [boom]
    after = lines[-2]["cursor"]
    assert [
        json.loads(line)["cursor"]
        for line in ok(cli("events", "--since", after, "--json")).splitlines()
    ] == [lines[-1]["cursor"]]
    assert "Invalid value" in failed(cli("events", "-t", "task-fialed"), code=2)
    assert "does not combine with --follow" in failed(
        cli("events", "--since", "0", "-n", "2", "--follow"), code=2
    )


def test_events_since_pages_with_n(cli: Cli) -> None:
    run_all(cli)
    every = ok(cli("events", "--since", "0", "--json")).splitlines()
    page = cli("events", "--since", "0", "-n", "2", "--json")
    assert ok(page).splitlines() == every[:2]
    after = json.loads(every[1])["cursor"]
    assert page.stderr == f"more events: --since {after}\n"
    rest = cli("events", "--since", after, "-n", str(len(every)), "--json")
    assert ok(rest).splitlines() == every[2:]
    assert rest.stderr == ""  # the last page


def test_status_shows_progress(cli: Cli) -> None:
    app = cli.app

    @app.task(name="halfway")
    def halfway() -> None:
        current_task().progress(5, 10, "halfway")
        current_task().checkpoint({"at": 5})
        raise ValueError("stop")

    id = halfway.delay().id
    Consumer(app, ["default"], burst=True, reserve_timeout=0.1).run()
    status = ok(cli("status", id))
    assert "progress:    5/10 halfway" in status
    assert 'checkpoint:  {"at": 5}' in status
    info = json.loads(ok(cli("status", id, "--json")))
    assert info["progress"] == {"done": 5, "total": 10, "message": "halfway"}
    assert info["checkpoint"] == {"at": 5}


APP = """
from gopherq import GopherQ

app = GopherQ("follow")


@app.task(name="add")
def add(x: int, y: int) -> int:
    return x + y


@app.on("task-enqueued")
def seen(event):
    print("seen", event.id, flush=True)
"""


@pytest.mark.parametrize("mode", ["--follow", "--listen"])
def test_follow_and_listen(mode: str, tmp_path: Path) -> None:
    (tmp_path / "followapp.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    env["GOPHERQ_BROKER_URL"] = f"sqlite:///{tmp_path / 'q.db'}"
    argv = [sys.executable, "-m", "gopherq", "events", "-A", "followapp", mode, "--json"]
    tail = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        from gopherq import GopherQ

        producer = GopherQ("producer", broker=env["GOPHERQ_BROKER_URL"])
        if mode == "--listen":
            assert tail.stderr is not None
            assert "listening" in tail.stderr.readline().decode()
        else:
            producer.events.backend.last(1)  # the table exists before the tail blocks on it
        ids = []
        assert tail.stdout is not None
        for _ in range(2):
            ids.append(producer.send_task("add", [1, 2]).id)
            line = tail.stdout.readline().decode()
            got = line.split()[1] if mode == "--listen" else json.loads(line)["id"]
            assert got == ids[-1]
        producer.close()
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(10) == 0
