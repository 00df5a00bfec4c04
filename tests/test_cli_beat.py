"""``gopherq schedules`` and ``gopherq beat`` through click's CliRunner, on every broker kind
(the app and runner come from test_cli)."""

from __future__ import annotations

import json
import logging

import pytest
from test_cli import Cli, cli, failed, ok

from gopherq import cli as cli_module

__all__ = ["cli"]  # the fixture


def test_add_list_pause_resume_remove(cli: Cli) -> None:
    cli.app.add_periodic("add", name="nightly", cron="0 3 * * *", tz="Europe/Paris", args=[1, 2])
    assert "no periodic entries" not in ok(cli("schedules", "list"))
    options = ["--every", "1m30s", "--kwargs", '{"name": "you"}', "--priority", "low"]
    out = ok(cli("schedules", "add", "fast", "--task", "greet", *options))
    assert out.strip() == "added fast: greet every 1m30s"
    ok(cli("schedules", "add", "cron", "--task", "elsewhere.job", "--cron", "*/10 * * * * *"))
    table = ok(cli("schedules", "list"))
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["NAME", "TASK", "SCHEDULE", "SOURCE"]
    assert [line.split()[0] for line in lines[1:]] == ["cron", "fast", "nightly"]
    assert "cron 0 3 * * * (Europe/Paris)" in table
    listed = {e["name"]: e for e in json.loads(ok(cli("schedules", "list", "--json")))}
    assert listed["fast"]["every"] == 90
    assert listed["fast"]["kwargs"] == {"name": "you"}
    assert listed["fast"]["priority"] == 3
    assert listed["fast"]["source"] == "dynamic"
    assert listed["nightly"]["source"] == "code"
    assert listed["fast"]["next_tick"] % 90 == 0

    assert ok(cli("schedules", "pause", "nightly")).strip() == "paused nightly"
    listed = {e["name"]: e for e in json.loads(ok(cli("schedules", "list", "--json")))}
    assert listed["nightly"]["paused"] is True
    assert listed["nightly"]["next_tick"] is None
    ok(cli("schedules", "resume", "nightly"))
    assert json.loads(ok(cli("schedules", "list", "--json")))[2]["paused"] is False

    assert ok(cli("schedules", "remove", "fast")).strip() == "removed fast"
    assert failed(cli("schedules", "remove", "fast")) == "Error: no dynamic entry named 'fast'"
    assert "declared in code" in failed(cli("schedules", "remove", "nightly"))


def test_add_help_describes_five_field_cron(cli: Cli) -> None:
    text = " ".join(ok(cli("schedules", "add", "--help", app=False)).split())
    assert "5 fields (minute hour day month weekday), or 6 with seconds first" in text


def test_bad_input_is_one_line(cli: Cli) -> None:
    both = cli("schedules", "add", "x", "--task", "add", "--every", "5", "--cron", "* * * * *")
    assert "give --cron or --every" in failed(both, code=2)
    add = ("schedules", "add", "x", "--task", "add")
    assert "bad cron expression" in failed(cli(*add, "--cron", "61 * * * *"))
    assert "unknown time zone" in failed(cli(*add, "--cron", "* * * * *", "--tz", "Nowhere"))
    assert "unknown time zone 'Mars/Olympus'" in failed(
        cli(*add, "--every", "5", "--tz", "Mars/Olympus", "--args", "[1, 2]")
    )
    assert "missing a required argument" in failed(cli(*add, "--every", "5", "--args", "[1]"))
    assert "no periodic entry named 'nope'" in failed(cli("schedules", "pause", "nope"))
    ok(cli(*add, "--every", "5", "--args", "[1, 2]"))
    assert "exists" in failed(cli(*add, "--every", "5", "--args", "[1, 2]"))
    ok(cli(*add, "--every", "5", "--args", "[3, 4]", "--replace"))


@pytest.mark.parametrize("broker_kind", ["memory"])  # real beats: tests/e2e/test_beat_e2e.py
def test_beat_refuses_a_memory_broker(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()  # the command sets up logging: undo it afterwards
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    result = cli("beat", "-l", "ERROR")
    assert result.exit_code == 2, result.output
    assert cli_module.main.commands["beat"].help
