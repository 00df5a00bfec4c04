"""``gopherq keys`` and ``gopherq audit``: the HTTP API's keys and its audit log.

Both only parse and print: the work is ``app.access`` (``gopherq.access``). They
need no ``web`` extra: keys are made before a server runs.
"""

from __future__ import annotations

import time

import click

from gopherq.access.keys import AccessError, ApiKey, FieldError
from gopherq.access.manager import MAX_AUDIT_LIMIT, parse_since
from gopherq.access.roles import Role
from gopherq.app import GopherQ
from gopherq.cli_support import json_option, print_json, table, when, with_app


def _state(key: ApiKey, now: float) -> str:
    if key.revoked is not None:
        return "revoked"
    return "active" if key.active(now) else "expired"


@click.group()
def keys() -> None:
    """API keys of the HTTP API (gopherq serve)."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice([r.label for r in Role], case_sensitive=False),
    help="viewer reads; submitter also sends jobs; operator also cancels, retries, "
    "pauses, purges; admin also manages keys and schedules.",
)
@click.option("--expires", default=None, help="Lifetime: 90d, 12h, or seconds (default: never).")
@click.option(
    "--task", "tasks", multiple=True, help="Only this task may be sent (repeat for more)."
)
@click.option(
    "--queue", "queues", multiple=True, help="Only this queue may be sent to (repeat for more)."
)
@click.option(
    "--rate", default=None, help="Send rate: 100/s, 6000/m, none (default: setting api_rate)."
)
@with_app
def create(
    app: GopherQ,
    name: str,
    role: str,
    expires: str | None,
    tasks: tuple[str, ...],
    queues: tuple[str, ...],
    rate: str | None,
) -> None:
    """Create a key NAME and print its secret, once."""
    try:
        key, secret = app.access.create(
            name, role, expires=expires, tasks=tasks, queues=queues, rate=rate
        )
    except FieldError as exc:
        option = {"tasks": "task", "queues": "queue"}.get(exc.field, exc.field)
        hint = "'NAME'" if option == "name" else f"'--{option}'"
        raise click.BadParameter(exc.detail, param_hint=hint) from None
    except AccessError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(secret)
    expiry = f", expires {when(key.expires)}" if key.expires is not None else ""
    click.echo(
        f"key {key.name!r} ({key.role.label}{expiry}): this secret is not shown again; "
        "send it as 'Authorization: Bearer <secret>'",
        err=True,
    )


@keys.command("list")
@json_option
@with_app
def list_keys(app: GopherQ, as_json: bool) -> None:
    """List keys (never their secrets), revoked and expired ones too."""
    found = app.access.list_keys()
    now = time.time()
    if as_json:
        print_json([{**key.to_map(), "state": _state(key, now)} for key in found])
        return
    rows = [
        (
            key.name,
            key.id,
            key.role.label,
            _state(key, now),
            when(key.created),
            when(key.expires),
            ",".join(key.tasks) if key.tasks else None,
            ",".join(key.queues) if key.queues else None,
            key.rate,
        )
        for key in found
    ]
    headers = ("name", "id", "role", "state", "created", "expires", "tasks", "queues", "rate")
    table(headers, rows, "no keys")


@keys.command("revoke")
@click.argument("name")
@with_app
def revoke(app: GopherQ, name: str) -> None:
    """Revoke the key NAME: servers refuse it within a second."""
    try:
        key = app.access.revoke(name)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {key.name!r} ({key.id})")


@click.command()
@click.option("--since", default=None, help="From: 1h, 7d (ago), Unix seconds or ISO 8601.")
@click.option(
    "--limit", type=click.IntRange(min=1, max=MAX_AUDIT_LIMIT), default=100, show_default=True
)
@json_option
@with_app
def audit(app: GopherQ, since: str | None, limit: int, as_json: bool) -> None:
    """The HTTP API's audit log: every mutating call, newest first."""
    try:
        start = None if since is None else parse_since(since, time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since'") from None
    entries = app.access.audit(start, limit)
    if as_json:
        print_json([entry.to_map() for entry in entries])
        return
    rows = [(when(e.time), e.key, e.role, e.action, e.target, e.client, e.status) for e in entries]
    headers = ("time", "key", "role", "action", "target", "client", "status")
    table(headers, rows, "no audit entries")
