"""The ``gopherq rate-limit`` command. It only parses and prints: the limits are
``app.rate_limits`` (``gopherq.admin_rates``)."""

from __future__ import annotations

import click

from gopherq.app import GopherQ
from gopherq.cli_support import json_option, print_json, table, when, with_app


@click.group("rate-limit")
def rate_limit() -> None:
    """Set, clear and list tasks' rate limits; workers honour a change within a second."""


@rate_limit.command("set")
@click.argument("task")
@click.argument("rate")
@click.option("--burst", type=int, default=None, help="Runs that may start at once [1].")
@with_app
def rate_limit_set(app: GopherQ, task: str, rate: str, burst: int | None) -> None:
    """Limit TASK to RATE (such as 50/s, 30/m, 5/h) on every worker."""
    parsed = app.rate_limits.set(task, rate, burst=burst)
    click.echo(f"{task}: {parsed} (burst {parsed.burst})")


@rate_limit.command("clear")
@click.argument("task")
@with_app
def rate_limit_clear(app: GopherQ, task: str) -> None:
    """Remove the rate set for TASK: its declared rate_limit, if any, applies again."""
    app.rate_limits.clear(task)
    info = next((i for i in app.rate_limits.list() if i.task == task and i.rate), None)
    click.echo(f"{task}: {info.rate if info else 'no rate limit'}")


@rate_limit.command("list")
@json_option
@with_app
def rate_limit_list(app: GopherQ, as_json: bool) -> None:
    """Every task with a rate limit (set or declared) or a hold."""
    infos = app.rate_limits.list()
    if as_json:
        print_json([info.to_map() for info in infos])
        return
    rows = [
        (i.task, i.rate or "-", i.burst, i.source, i.per_key or "-", when(i.held_until))
        for i in infos
    ]
    headers = ("task", "rate", "burst", "source", "per key", "held until")
    table(headers, rows, "no rate limits")
