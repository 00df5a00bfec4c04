"""``gopherq health`` reports the workers' recent heartbeats; ``--require-worker``
makes their absence exit 1."""

from __future__ import annotations

import json
import time

import pytest
from test_cli import Cli, cli, failed, ok

from gopherq.events import Event

__all__ = ["cli"]  # the fixture


def heartbeat(cli: Cli, worker: str, age: float) -> None:
    event = Event("worker-heartbeat", time.time() - age, worker=worker, extra={"active": 0})
    cli.app.events.publish([event])


def test_health_reports_the_workers_with_a_recent_heartbeat(cli: Cli) -> None:
    report = json.loads(ok(cli("health", "--json")))
    assert report["ok"] is True
    beats = report["heartbeats"]
    assert (beats["checked"], beats["recent"], beats["workers"], beats["last"]) == (
        True,
        False,
        [],
        None,
    )
    assert beats["window"] == 15.0  # three worker_heartbeat intervals
    assert "workers: none sent a heartbeat in the last 15s" in ok(cli("health"))
    assert "none sent a heartbeat" in failed(cli("health", "--require-worker"))

    heartbeat(cli, "old:1", age=100)
    heartbeat(cli, "host:2", age=1)
    heartbeat(cli, "host:3", age=0)
    heartbeat(cli, "host:2", age=0)
    beats = json.loads(ok(cli("health", "--json", "--require-worker")))["heartbeats"]
    assert (beats["recent"], beats["workers"]) == (True, ["host:2", "host:3"])
    assert beats["last"] < 5
    text = ok(cli("health", "--require-worker"))
    assert "workers: 2 sent a heartbeat in the last 15s: host:2, host:3" in text


def test_an_old_heartbeat_is_not_recent(cli: Cli) -> None:
    heartbeat(cli, "old:1", age=100)
    result = cli("health", "--json", "--require-worker")
    assert result.exit_code == 1
    beats = json.loads(result.stdout)["heartbeats"]
    assert beats["recent"] is False and 99 < beats["last"] < 200
    assert "the last 100s ago" in ok(cli("health"))


def test_with_events_off_heartbeats_are_unknown(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPHERQ_EVENTS", "off")
    assert "workers: unknown (events are off" in ok(cli("health"))
    result = cli("health", "--require-worker", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["heartbeats"]["checked"] is False
