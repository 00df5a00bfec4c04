"""``gopherq protocol``: what producers in other languages need, from the installed
release (docs/protocol.md)."""

from __future__ import annotations

import click

from gopherq import protocol as wire


@click.group()
def protocol() -> None:
    """What producers in other languages need (docs/protocol.md)."""


@protocol.command("version")
def version() -> None:
    """Print the protocol version this release speaks."""
    click.echo(wire.PROTOCOL_VERSION)


@protocol.command("redis-enqueue-script")
def redis_enqueue_script() -> None:
    """Print the Redis enqueue script (self-contained Lua, for EVAL or SCRIPT LOAD)."""
    click.echo(wire.redis_enqueue_script(), nl=False)


@protocol.command("sqlite-schema")
def sqlite_schema() -> None:
    """Print the SQL that creates the SQLite tables (each statement IF NOT EXISTS)."""
    for statement in wire.sqlite_schema():
        click.echo(_dedent(statement) + ";")


def _dedent(statement: str) -> str:
    """A statement of a class attribute, its continuation lines indented by four (a
    closing parenthesis by none)."""
    first, *rest = statement.splitlines()
    lines = [line.strip() for line in rest]
    return "\n".join([first, *(line if line.startswith(")") else "    " + line for line in lines)])
