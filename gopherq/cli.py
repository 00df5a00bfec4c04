"""The ``gopherq`` command. It only parses and prints; the work lives in the library."""

from __future__ import annotations

import click

from gopherq.app import GopherQ
from gopherq.errors import GopherQError
from gopherq.loader import load_app


class _Context:
    """What the group passes to its commands: where to find the app."""

    def __init__(self, app_spec: str | None) -> None:
        self.app_spec = app_spec

    def app(self) -> GopherQ:
        if not self.app_spec:
            raise click.UsageError("no app given: pass -A module[:attr] or set GOPHERQ_APP")
        try:
            return load_app(self.app_spec)
        except GopherQError as exc:
            raise click.ClickException(str(exc)) from None


_app_option = click.option(
    "-A", "--app", "app_spec", envvar="GOPHERQ_APP", help="The app: module[:attr]."
)


@click.group()
@_app_option
@click.pass_context
def main(ctx: click.Context, app_spec: str | None) -> None:
    """gopherq: background tasks."""
    ctx.obj = _Context(app_spec)


def _app(ctx: click.Context, app_spec: str | None) -> GopherQ:
    context: _Context = ctx.ensure_object(_Context)
    if app_spec:
        context.app_spec = app_spec
    return context.app()


@main.command()
@_app_option
@click.option("-c", "--concurrency", type=int, default=None, help="Worker processes (CPU count).")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("-l", "--loglevel", default="INFO", show_default=True, help="Log level.")
@click.option(
    "--max-tasks-per-child", type=int, default=None, help="Recycle a process after N tasks."
)
@click.option("--shutdown-timeout", type=float, default=None, help="Seconds to finish on SIGTERM.")
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str | None,
    concurrency: int | None,
    queues: str | None,
    burst: bool,
    loglevel: str,
    max_tasks_per_child: int | None,
    shutdown_timeout: float | None,
) -> None:
    """Run a prefork worker."""
    from gopherq.worker import Worker

    app = _app(ctx, app_spec)
    code = Worker(
        app,
        concurrency=concurrency,
        queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
        burst=burst,
        loglevel=loglevel,
        max_tasks_per_child=max_tasks_per_child,
        shutdown_timeout=shutdown_timeout,
    ).run()
    ctx.exit(code)
