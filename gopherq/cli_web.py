"""The ``gopherq serve`` command. It only parses and prints: the server is
``gopherq.web``."""

from __future__ import annotations

import click

from gopherq.app import GopherQ
from gopherq.cli_support import with_app
from gopherq.web_extra import require_web


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
@with_app
def serve(app: GopherQ, host: str, port: int, no_auth: bool) -> None:
    """Serve the HTTP API (/api/v1, docs at /api/docs)."""
    require_web()
    from gopherq.web.server import serve as run

    if no_auth:
        click.echo("warning: --no-auth: every request is served as admin, without a key", err=True)
    run(app, host, port, auth=not no_auth)
