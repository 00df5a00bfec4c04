"""The ``gopherq`` command. It only parses and prints; the work lives in the library.

Commands are here and, for job history and events, in ``gopherq.cli_history``;
the pieces they share (app option, tables, JSON) in ``gopherq.cli_support``.

Every command that reads has ``--json``; people get aligned tables. Commands
that delete or requeue in bulk ask first, and refuse without ``--yes`` when
standard input is not a terminal. Errors are one line on stderr and exit 1
(2 for usage errors), never a traceback.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

from gopherq import admin, admin_dead, admin_queues, admin_workers
from gopherq.app import GopherQ
from gopherq.celery_names import CLI_HINTS, CLI_OPTION_HINTS
from gopherq.cli_access import audit, keys
from gopherq.cli_beat import beat, schedules
from gopherq.cli_exporter import exporter
from gopherq.cli_history import events, jobs
from gopherq.cli_protocol import protocol
from gopherq.cli_rates import rate_limit
from gopherq.cli_support import (
    CliContext,
    json_arg,
    json_option,
    log_format_option,
    print_json,
    print_version,
    priority_option,
    progress_text,
    shorten,
    table,
    when,
    with_app,
)
from gopherq.cli_web import serve
from gopherq.display import to_json
from gopherq.errors import GopherQError, ResultTimeout, TaskFailed
from gopherq.redaction import printable, printable_lines, redact_text, redact_url
from gopherq.states import DeadReason, State


class _Group(click.Group):
    """A group that turns gopherq's errors into one line and exit code 1.

    Every error message may quote data or a library's text: URLs in it are
    redacted and control characters escaped (docs/security.md).
    """

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Celery's subcommands that gopherq lacks say what it has instead."""
        name = args[0] if args else ""
        if name not in self.commands and name in CLI_HINTS:
            raise click.UsageError(f"no command {name!r} (Celery's): {CLI_HINTS[name]}", ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # the commands' own, and usage errors
            if isinstance(exc, click.NoSuchOption) and exc.option_name in CLI_OPTION_HINTS:
                exc.message += f" ({exc.option_name} is Celery's: gopherq has "
                exc.message += f"{CLI_OPTION_HINTS[exc.option_name]})"
            exc.message = printable_lines(redact_text(exc.message))
            raise
        except TaskFailed as exc:
            raise click.ClickException(_one_line(f"task {exc.task_id} failed: {exc}")) from None
        except GopherQError as exc:
            message = f"{exc}".partition("\n")[0] or repr(exc)
            raise click.ClickException(_one_line(message)) from None


def _one_line(message: str) -> str:
    """An error message fit for the terminal: URLs redacted, control characters escaped."""
    return printable(redact_text(message))


_yes_option = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")


@click.group(cls=_Group)
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=print_version,
    help="Print the version and exit.",
)
@click.option(
    "-A", "--app", "app_spec", envvar="GOPHERQ_APP", help="The app: module[:attr] [GOPHERQ_APP]."
)
@click.pass_context
def main(ctx: click.Context, app_spec: str | None) -> None:
    """gopherq: background tasks."""
    ctx.obj = CliContext(app_spec)


main.add_command(jobs)
main.add_command(events)
main.add_command(beat)
main.add_command(schedules)
main.add_command(protocol)
main.add_command(exporter)
main.add_command(serve)
main.add_command(keys)
main.add_command(audit)
main.add_command(rate_limit)


SUBMIT_WAIT = 60.0
"""Seconds ``submit --wait`` waits by default."""
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _queue_list(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> list[str] | dict[str, int | None]:
    """``-Q a,b -Q c`` as ``[a, b, c]``: repeated options merge, duplicates go. With a
    weight given (``-Q a:2,b``), queue -> weight (None where not given). A bad weight
    raises ``ConfigurationError`` (one line)."""
    from gopherq.worker.weights import parse_queues

    queues = parse_queues([name for option in value for name in option.split(",")])
    return queues if any(queues.values()) else list(queues)


@main.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (CPU count).",
)
@click.option(
    "-Q",
    "--queues",
    multiple=True,
    callback=_queue_list,
    help="Queues to consume: comma-separated, or repeat -Q; NAME:WEIGHT takes tasks "
    "in those shares (-Q high:3,default:2,low:1).",
)
@click.option(
    "--strict", is_flag=True, help="Take from the queues in listed order: all of the first's first."
)
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "-l",
    "--loglevel",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Log level; WARNING hides the banner and the per-task lines.",
)
@log_format_option
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    default=None,
    help="Recycle a process after N tasks.",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    default=None,
    help="Recycle a process above N KiB RSS.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to finish on SIGTERM.",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to keep trying a broker that is down at start, then exit 1 (30).",
)
@click.option(
    "-B", "--beat", is_flag=True, help="Run the beat in this worker too (for development)."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics, /live and /ready on this port (0: any free port, logged).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics port listens on (0.0.0.0: every interface).",
)
@with_app
def worker(
    app: GopherQ,
    concurrency: int | None,
    queues: list[str] | dict[str, int | None],
    strict: bool,
    burst: bool,
    loglevel: str,
    log_format: str | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    shutdown_timeout: float | None,
    connect_timeout: float | None,
    beat: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run a prefork worker."""
    from gopherq.worker import Worker

    code = Worker(
        app,
        concurrency=concurrency,
        queues=queues or None,
        strict=strict,
        burst=burst,
        loglevel=loglevel,
        log_format=log_format,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        shutdown_timeout=shutdown_timeout,
        connect_timeout=connect_timeout,
        beat=beat,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    ).run()
    click.get_current_context().exit(code)


@main.command()
@click.argument("name")
@click.option("--args", "args", callback=json_arg(list), help="Positional arguments: JSON array.")
@click.option("--kwargs", "kwargs", callback=json_arg(dict), help="Keyword arguments: JSON object.")
@priority_option
@click.option("--countdown", type=click.FloatRange(min=0), help="Seconds to wait before running.")
@click.option("--queue", default=None, help="Queue (default: the task's).")
@click.option(
    "--key",
    default=None,
    help="Idempotency key: while a job of the queue holds it, print that job's id and send "
    "nothing.",
)
@click.option(
    "--key-ttl",
    type=click.FloatRange(min=0),
    default=None,
    help="With --key: seconds the key stays held once the job succeeded (default: the "
    "task's key_ttl).",
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=SUBMIT_WAIT,
    show_default=True,
    help="With --wait: give up after S seconds.",
)
@with_app
def submit(
    app: GopherQ,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    priority: str | None,
    countdown: float | None,
    queue: str | None,
    key: str | None,
    key_ttl: float | None,
    wait: bool,
    timeout: float,
) -> None:
    """Send task NAME; print its id, and with --wait its result as JSON."""
    unknown = admin.unregistered(app, name)
    if unknown:
        click.echo(f"warning: {unknown}", err=True)
    target = admin.task_queue(app, name, queue)
    if queue is not None and not app.settings.eager and queue not in admin.known_queues(app):
        click.echo(
            f"warning: no worker of app {app.name} consumes queue {queue!r} by default and "
            f"the broker has no message of it: start one with -Q {queue}",
            err=True,
        )
    options = {
        "priority": priority,
        "countdown": countdown,
        "queue": queue,
        "key": key,
        "key_ttl": key_ttl,
    }
    submission = admin.Submission(
        name, args, kwargs, {k: v for k, v in options.items() if v is not None}
    )
    prepared = admin.prepare(app, submission, registered=False)
    if prepared.problems:  # the arguments do not fit, an option is out of bounds
        raise click.ClickException("; ".join(detail for _, detail in prepared.problems))
    [sent] = admin.submit_many(app, [prepared])
    result = app.result(sent.id)
    click.echo(result.id)
    if wait:
        try:
            value = result.get(timeout=timeout)
        except ResultTimeout as exc:
            if result.state in (State.QUEUED, State.SCHEDULED, State.PENDING):
                raise click.ClickException(
                    f"{exc}: no worker may be consuming queue {target!r}; start one "
                    f"(gopherq worker -A ... -Q {target}) or wait longer with --timeout"
                ) from None
            raise
        click.echo(to_json(value))


@main.command()
@click.argument("id")
@json_option
@with_app
def status(app: GopherQ, id: str, as_json: bool) -> None:
    """Show the state, result or error of task ID."""
    info = admin.job_status(app, id)
    if as_json:
        print_json(info)
        return
    error = info.pop("error", None)
    for key in ("created", "started", "finished"):
        if key in info:
            info[key] = when(info[key])
    for key in ("result", "checkpoint"):
        if key in info:
            info[key] = to_json(info[key])
    if "progress" in info:
        info["progress"] = progress_text(**info["progress"])
    width = max(map(len, info))
    for key, value in info.items():
        click.echo(f"{key + ':':<{width + 1}}  {printable(str(value))}")
    if error:
        click.echo(f"{'error:':<{width + 1}}  {printable(error['type'] + ': ' + error['message'])}")
        if error["traceback"]:
            click.echo("\n" + printable_lines(error["traceback"].rstrip()))


@main.command()
@click.argument("ids", nargs=-1, required=True)
@json_option
@with_app
def cancel(app: GopherQ, ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel tasks IDS: queued or scheduled ones never run, running ones are stopped.

    Exits 1 if some id was not found queued, scheduled or running (finished,
    dead-lettered or unknown).
    """
    found = {c.id: c.was for c in app.cancel(ids)}
    outcomes = {id: admin.cancel_outcome(found.get(id)) for id in ids}
    if as_json:
        print_json([{"id": id, "outcome": outcome} for id, outcome in outcomes.items()])
    else:
        for id, outcome in outcomes.items():
            click.echo(f"{id}  {_CANCEL_TEXT[outcome]}")
    missing = sum(1 for id in ids if id not in found)
    if missing:
        raise click.ClickException(
            f"{missing} of {len(ids)} not cancelled: not queued, scheduled or running"
        )


_CANCEL_TEXT = {
    "cancelled": "cancelled: it will not run",
    "stopping": "running: its worker stops it (cancel_grace, then kill)",
    "not-found": "not found: finished, dead-lettered or unknown",
}


@main.command()
@json_option
@with_app
def stats(app: GopherQ, as_json: bool) -> None:
    """Messages per queue: ready, scheduled, running, dead; and paused queues."""
    queues = app.broker.stats()
    if as_json:
        print_json([dataclasses.asdict(q) for q in queues.values()])
        return
    click.echo(printable(f"broker: {redact_url(app.broker_url)}"), err=True)
    rows = [(q.name, q.ready, q.scheduled, q.running, q.dead, q.paused) for q in queues.values()]
    table(("queue", "ready", "scheduled", "running", "dead", "paused"), rows, "no queues yet")


@main.group()
def dead() -> None:
    """Inspect and requeue dead letters."""


_reason_option = click.option(
    "--reason",
    type=click.Choice([r.value for r in DeadReason], case_sensitive=False),
    default=None,
    callback=lambda ctx, param, value: value and value.upper(),
    help="Only this reason (elsewhere than SQLite and Redis: among the newest "
    f"{admin_dead.SCAN_LIMIT:,}).",
)


@dead.command("list")
@click.option("--queue", default=None, help="Only this queue.")
@_reason_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@with_app
def dead_list(
    app: GopherQ, queue: str | None, reason: str | None, limit: int, as_json: bool
) -> None:
    """List dead letters, newest first."""
    letters = admin_dead.dead_letters(app, queue, reason, limit=limit)
    if as_json:
        print_json([dataclasses.asdict(letter) for letter in letters])
        return
    rows = [
        (d.id, d.queue, d.task, d.reason, d.attempts, when(d.died), shorten(d.error))
        for d in letters
    ]
    headers = ("id", "queue", "task", "reason", "attempts", "died", "error")
    table(headers, rows, "no dead letters")


@dead.command("retry")
@click.argument("ids", nargs=-1, required=True)
@with_app
def dead_retry(app: GopherQ, ids: tuple[str, ...]) -> None:
    """Requeue the dead letters IDS (attempts start again from 0)."""
    count = admin_dead.retry(app, ids)
    click.echo(f"requeued {count} of {len(ids)}")
    if count < len(ids):
        raise click.ClickException(f"{len(ids) - count} of the ids are not dead letters")


@dead.command("retry-all")
@click.option("--queue", default=None, help="Only this queue.")
@_reason_option
@_yes_option
@with_app
def dead_retry_all(app: GopherQ, queue: str | None, reason: str | None, yes: bool) -> None:
    """Requeue every dead letter (of one queue, of one reason)."""
    _confirm(yes, f"Requeue every dead letter{_of(queue, reason)}?")
    click.echo(f"requeued {admin_dead.retry(app, queue=queue, reason=reason)}")


@dead.command("purge")
@click.option("--queue", default=None, help="Only this queue.")
@_reason_option
@_yes_option
@with_app
def dead_purge(app: GopherQ, queue: str | None, reason: str | None, yes: bool) -> None:
    """Delete every dead letter (of one queue, of one reason)."""
    _confirm(yes, f"Delete every dead letter{_of(queue, reason)}?")
    click.echo(f"deleted {admin_dead.purge(app, queue=queue, reason=reason)}")


@dead.command("replay")
@click.argument("id")
@click.option("--args", "args", default=None, help="New positional arguments: JSON array.")
@click.option("--kwargs", "kwargs", default=None, help="New keyword arguments: JSON object.")
@with_app
def dead_replay(app: GopherQ, id: str, args: str | None, kwargs: str | None) -> None:
    """Send dead letter ID's task again as a new job, with new arguments where given;
    the dead letter is deleted once the new job is sent."""
    new_args = None if args is None else json_arg(list)(None, None, args)
    new_kwargs = None if kwargs is None else json_arg(dict)(None, None, kwargs)
    done = admin_dead.replay(app, id, new_args, new_kwargs)
    click.echo(done.id)


def _confirm(yes: bool, question: str) -> None:
    """Ask before a destructive step; refuse without ``--yes`` off a terminal."""
    if yes:
        return
    if not _interactive():
        raise click.UsageError("standard input is not a terminal: pass --yes to confirm")
    click.confirm(question, abort=True)


def _interactive() -> bool:
    return sys.stdin.isatty()


def _of(queue: str | None, reason: str | None = None) -> str:
    where = f" of queue {queue!r}" if queue else " of every queue"
    return where + (f" with reason {reason}" if reason else "")


@main.command()
@click.argument("queue", required=False)
@click.option("--all", "every", is_flag=True, help="Every queue (known to the broker or the app).")
@_yes_option
@with_app
def purge(app: GopherQ, queue: str | None, every: bool, yes: bool) -> None:
    """Delete the ready and scheduled messages of QUEUE, or of every queue with --all
    (running ones stay)."""
    if (queue is not None) == every:
        raise click.UsageError("give a QUEUE or --all (not both)")
    if queue is not None:
        _confirm(yes, f"Delete every waiting message of queue {queue!r}?")
        click.echo(f"deleted {admin_queues.purge(app, queue)}")
        return
    names = admin.known_queues(app)
    _confirm(yes, f"Delete every waiting message of every queue ({', '.join(names)})?")
    deleted = admin.purge_all(app, names)
    for name, count in deleted.items():
        click.echo(f"{name}: deleted {count}")
    click.echo(f"deleted {sum(deleted.values())}")


@main.command()
@click.argument("queue")
@click.option("--create", is_flag=True, help="Pause QUEUE even if nothing knows it yet.")
@with_app
def pause(app: GopherQ, queue: str, create: bool) -> None:
    """Stop workers taking messages from QUEUE; sending still works.

    A queue that neither the app's tasks nor the broker know (a typo?) is
    refused unless ``--create`` is given.
    """
    try:
        admin_queues.pause(app, queue, create=create)
    except admin_queues.UnknownQueue as exc:
        raise click.ClickException(f"{exc}; pass --create to pause it anyway") from None
    click.echo(f"paused {queue}")


@main.command()
@click.argument("queue")
@with_app
def resume(app: GopherQ, queue: str) -> None:
    """Let workers take messages from QUEUE again."""
    admin_queues.resume(app, queue)
    click.echo(f"resumed {queue}")


@main.command()
@click.option(
    "--require-worker",
    is_flag=True,
    help="Exit 1 also when no worker sent a heartbeat lately (3 worker_heartbeat intervals).",
)
@json_option
@with_app
def health(app: GopherQ, require_worker: bool, as_json: bool) -> None:
    """Exit 0 if the broker answers, 1 if not; report the workers' recent heartbeats."""
    result = admin.check_health(app)
    beats = admin.recent_heartbeats(app) if result.ok else None
    if as_json:
        report = dataclasses.asdict(result)
        report["heartbeats"] = _heartbeats_map(beats) if beats else None
        print_json(report)
    elif result.ok:
        click.echo(printable(f"ok: {result.broker} answered in {result.latency * 1000:.1f} ms"))
    else:
        click.echo(printable(f"broker {result.broker} does not answer: {result.error}"), err=True)
    if beats is not None and not as_json:
        line = _heartbeats_line(beats)
        click.echo(line, err=require_worker and not beats.recent)
    if not result.ok or (require_worker and not (beats and beats.recent)):
        sys.exit(1)


def _heartbeats_map(beats: admin.Heartbeats) -> dict[str, Any]:
    report = dataclasses.asdict(beats)
    report["recent"] = beats.recent
    return report


def _heartbeats_line(beats: admin.Heartbeats) -> str:
    window = f"{beats.window:g}s"
    if not beats.checked:
        return printable(f"workers: unknown ({beats.error})")
    if beats.recent:
        names = ", ".join(beats.workers)
        return printable(
            f"workers: {len(beats.workers)} sent a heartbeat in the last {window}: {names}"
        )
    last = f"; the last {beats.last:.0f}s ago" if beats.last is not None else ""
    return f"workers: none sent a heartbeat in the last {window}{last}"


@main.command()
@click.option("--stale", is_flag=True, help="Also workers whose heartbeats stopped.")
@json_option
@with_app
def workers(app: GopherQ, stale: bool, as_json: bool) -> None:
    """List the workers that sent a heartbeat lately, with their running tasks."""
    views = admin_workers.workers(app, stale=stale)
    if as_json:
        print_json([dataclasses.asdict(view) for view in views])
        return
    rows = [
        (
            v.name,
            "yes" if v.alive else "no",
            f"{v.age:.0f}s",
            v.concurrency,
            v.active,
            v.processed,
            ", ".join(f"{c.task}[{c.id}]" for c in v.current),
        )
        for v in views
    ]
    headers = ("worker", "alive", "last beat", "concurrency", "active", "done", "running")
    table(headers, rows, "no workers sent a heartbeat lately")


@main.command()
@json_option
@with_app
def tasks(app: GopherQ, as_json: bool) -> None:
    """List the app's registered tasks."""
    infos = admin.registered_tasks(app)
    if as_json:
        print_json([dataclasses.asdict(info) for info in infos])
        return
    rows = [(t.name, t.queue, t.priority, t.retries, t.description) for t in infos]
    table(("name", "queue", "priority", "retries", "description"), rows, "no tasks registered")
