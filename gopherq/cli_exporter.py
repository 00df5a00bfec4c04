"""The ``gopherq exporter`` command. It only parses and prints: the exporter is
``gopherq.observability.exporter``."""

from __future__ import annotations

import click

from gopherq.app import GopherQ
from gopherq.cli_support import with_app


@click.command()
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    required=True,
    help="TCP port for /metrics (0: any free port, printed at start).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@with_app
def exporter(app: GopherQ, port: int, host: str) -> None:
    """Serve the broker's queue gauges for Prometheus; run one per deployment."""
    from gopherq.observability.exporter import run

    run(app, port, host, on_ready=lambda url: click.echo(f"serving {url}", err=True))
