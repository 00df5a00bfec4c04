"""The ``gopherq beat`` and ``gopherq schedules`` commands. They only parse and print:
the beat is ``gopherq.beat``, the entries ``app.schedules``."""

from __future__ import annotations

from typing import Any

import click

from gopherq.app import GopherQ
from gopherq.cli_support import (
    json_arg,
    json_option,
    log_format_option,
    print_json,
    priority_option,
    table,
    when,
    with_app,
)
from gopherq.schedules import CATCH_UPS


@click.command()
@click.option("-l", "--loglevel", default="INFO", show_default=True, help="Log level.")
@log_format_option
@click.option(
    "--lease", type=click.FloatRange(min=0.5), default=None, help="Leader lease in seconds."
)
@with_app
def beat(app: GopherQ, loglevel: str, log_format: str | None, lease: float | None) -> None:
    """Send the app's periodic tasks; any number may run, one leads."""
    from gopherq.beat import Beat

    beat = Beat(app, lease_seconds=lease, loglevel=loglevel, log_format=log_format)
    click.get_current_context().exit(beat.run())


@click.group()
def schedules() -> None:
    """List, add, remove, pause and resume periodic entries."""


@schedules.command("list")
@json_option
@with_app
def schedules_list(app: GopherQ, as_json: bool) -> None:
    """Every periodic entry, with its last and next run."""
    infos = app.schedules.list()
    if as_json:
        print_json([info.to_map() for info in infos])
        return
    rows = [
        (
            i.entry.name,
            i.entry.task,
            i.entry.when,
            i.source,
            "paused" if i.paused else "active",
            when(i.last_tick),
            when(i.next_tick),
        )
        for i in infos
    ]
    headers = ("name", "task", "schedule", "source", "state", "last run", "next run")
    table(headers, rows, "no periodic entries")


@schedules.command("add")
@click.argument("name")
@click.option("--task", "task", required=True, help="Task name.")
@click.option(
    "--cron",
    default=None,
    help="Cron expression: 5 fields (minute hour day month weekday), "
    "or 6 with seconds first; see docs/beat.md.",
)
@click.option("--every", default=None, help="Interval: 30, 30s, 5m, 1h30m, 1d.")
@click.option("--args", "args", callback=json_arg(list), help="Positional arguments: JSON array.")
@click.option("--kwargs", "kwargs", callback=json_arg(dict), help="Keyword arguments: JSON object.")
@click.option(
    "--tz", default="UTC", show_default=True, help="IANA time zone of the cron expression."
)
@click.option("--queue", default=None, help="Queue (default: the task's).")
@priority_option
@click.option("--catch-up", type=click.Choice(CATCH_UPS), default="latest", show_default=True)
@click.option("--paused", is_flag=True, help="Add it paused.")
@click.option("--replace", is_flag=True, help="Replace a dynamic entry of that name.")
@with_app
def schedules_add(
    app: GopherQ,
    name: str,
    task: str,
    cron: str | None,
    every: str | None,
    args: list[Any],
    kwargs: dict[str, Any],
    tz: str,
    queue: str | None,
    priority: str | None,
    catch_up: str,
    paused: bool,
    replace: bool,
) -> None:
    """Add the dynamic entry NAME; running beats pick it up within a second."""
    if (cron is None) == (every is None):
        raise click.UsageError("give --cron or --every")
    entry = app.schedules.add(
        name,
        task,
        replace=replace,
        cron=cron,
        every=every,
        tz=tz,
        args=args,
        kwargs=kwargs,
        queue=queue,
        priority=priority,
        catch_up=catch_up,
        paused=paused,
    )
    click.echo(f"added {entry.name}: {entry.task} {entry.when}")


@schedules.command("remove")
@click.argument("name")
@with_app
def schedules_remove(app: GopherQ, name: str) -> None:
    """Remove the dynamic entry NAME."""
    if not app.schedules.remove(name):
        raise click.ClickException(f"no dynamic entry named {name!r}")
    click.echo(f"removed {name}")


@schedules.command("pause")
@click.argument("name")
@with_app
def schedules_pause(app: GopherQ, name: str) -> None:
    """Stop sending entry NAME (from code, settings or dynamic)."""
    app.schedules.pause(name)
    click.echo(f"paused {name}")


@schedules.command("resume")
@click.argument("name")
@with_app
def schedules_resume(app: GopherQ, name: str) -> None:
    """Send entry NAME again from its next tick (missed ticks are skipped)."""
    app.schedules.resume(name)
    click.echo(f"resumed {name}")
