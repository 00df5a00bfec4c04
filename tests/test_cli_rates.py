"""``gopherq rate-limit``, through click's CliRunner, on every broker kind (the app
module and fixtures of tests/test_cli.py)."""

from __future__ import annotations

import json

import pytest
from test_cli import Cli, cli, failed, ok

__all__ = ["cli"]  # the fixture


@pytest.fixture(autouse=True)
def _no_release_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker reads the table here: release at once."""
    monkeypatch.setattr("gopherq.admin_rates.RELEASE_AFTER", 0.0)


def test_set_list_clear(cli: Cli) -> None:
    assert ok(cli("rate-limit", "list")).strip() == "no rate limits"
    assert ok(cli("rate-limit", "set", "add", "50/s", "--burst", "10")) == "add: 50/s (burst 10)\n"
    listed = ok(cli("rate-limit", "list"))
    assert "add" in listed and "50/s" in listed and "set" in listed
    [entry] = json.loads(ok(cli("rate-limit", "list", "--json")))
    assert (entry["task"], entry["rate"], entry["burst"], entry["source"]) == (
        "add",
        "50/s",
        10,
        "set",
    )
    assert ok(cli("rate-limit", "clear", "add")) == "add: no rate limit\n"
    assert json.loads(ok(cli("rate-limit", "list", "--json"))) == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("set", "nope", "5/s"), "no task named 'nope' is registered"),
        (("set", "add", "fast"), "rate_limit 'fast' is not a rate: expected a number of runs"),
        (("set", "add", "5/s", "--burst", "0"), "burst 0 is not a number of runs"),
        (("clear", "nope"), "no task named 'nope' is registered"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    cli: Cli, args: tuple[str, ...], error: str
) -> None:
    assert error in failed(cli("rate-limit", *args))
    assert json.loads(ok(cli("rate-limit", "list", "--json"))) == []
