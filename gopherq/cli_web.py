"""The ``gopherq serve`` command. It only parses and prints: the server is
``gopherq.web``."""

from __future__ import annotations

import click

from gopherq.app import GopherQ
from gopherq.cli_support import with_app
from gopherq.web_extra import DEFAULT_THREADS, require_web


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=5555,
    show_default=True,
    help="TCP port.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Let every request in as admin, without a key: loopback hosts only.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log a line per request (off by default: it slows small requests).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DEFAULT_THREADS,
    show_default=True,
    help="Blocking calls run at once (store reads); more only helps a slow remote store.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes sharing the port: about one CPU each.",
)
@with_app
def serve(
    app: GopherQ,
    host: str,
    port: int,
    no_auth: bool,
    access_log: bool,
    threads: int,
    workers: int,
) -> None:
    """Serve the HTTP API (/api/v1, docs at /api/docs)."""
    require_web()
    from gopherq.web.server import serve as run

    def ready(url: str) -> None:
        if no_auth:
            click.echo(
                "warning: --no-auth: every request is served as admin, without a key", err=True
            )
        processes = f", {workers} processes" if workers > 1 else ""
        click.echo(f"serving {url} (API {url}/api/v1, docs {url}/api/docs{processes})", err=True)

    status = run(
        app,
        host,
        port,
        auth=not no_auth,
        on_ready=ready,
        access_log=access_log,
        threads=threads,
        workers=workers,
    )
    if status:
        raise SystemExit(status)
