"""What the ``gopherq`` command modules share: finding the app, options, output.

The commands live in ``gopherq.cli`` and ``gopherq.cli_history``; like them,
this module only parses and prints.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from gopherq.app import GopherQ
from gopherq.display import local_time, to_json
from gopherq.errors import GopherQError
from gopherq.loader import load_app
from gopherq.redaction import printable
from gopherq.settings import LOG_FORMATS
from gopherq.states import Priority


class CliContext:
    """What the group passes to its commands: where to find the app."""

    def __init__(self, app_spec: str | None) -> None:
        self.app_spec = app_spec

    def app(self) -> GopherQ:
        """Load the app; any failure becomes a one-line error."""
        if not self.app_spec:
            raise click.UsageError("no app given: pass -A module[:attr] or set GOPHERQ_APP")
        try:
            return load_app(self.app_spec)
        except GopherQError:
            raise
        except Exception as exc:  # the app module's own import failed
            raise click.ClickException(
                f"cannot load app {self.app_spec!r}: {type(exc).__name__}: {exc}"
            ) from None


app_option = click.option("-A", "--app", "app_spec", help="The app: module[:attr].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
priority_option = click.option(
    "--priority",
    type=click.Choice(
        [p.name.lower() for p in Priority] + [str(int(p)) for p in Priority], case_sensitive=False
    ),
    help="Priority: a name or 0 (critical) to 4 (bulk).",
)
log_format_option = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default=None,
    help="console (default) or json: one object per line; setting log_format.",
)


def with_app(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command ``-A`` (which wins over the group's) and call it with the app first."""

    @functools.wraps(fn)
    def run(app_spec: str | None, **kwargs: Any) -> None:
        context = click.get_current_context().find_object(CliContext) or CliContext(None)
        context.app_spec = app_spec or context.app_spec
        fn(context.app(), **kwargs)

    return app_option(run)


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--version``: the installed package's version (its source's when not installed)."""
    if not value or ctx.resilient_parsing:
        return
    try:
        version = importlib.metadata.version("gopherq")
    except importlib.metadata.PackageNotFoundError:
        from gopherq.version import __version__ as version
    click.echo(f"gopherq {version}")
    ctx.exit()


# Output.


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (bytes, datetimes: see ``gopherq.display``)."""
    click.echo(to_json(data, indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    """Print rows as aligned columns; numbers right-aligned."""
    if not rows:
        click.echo(empty)
        return
    cells = [[cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    numeric = [all(is_int(row[i]) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = (
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    click.echo(line([h.upper() for h in headers]))
    for row in cells:
        click.echo(line(row))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(str(value))


def when(timestamp: float | None, *, ms: bool = False) -> str:
    """A time for a table: ISO 8601 local time with its offset, '-' for None."""
    return "-" if timestamp is None else local_time(timestamp, ms=ms)


def shorten(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def json_arg(kind: type[list[Any]] | type[dict[str, Any]]) -> Callable[..., Any]:
    """A click callback parsing a JSON list or object."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return kind()
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise click.BadParameter("JSON nested too deeply") from None
        if not isinstance(parsed, kind):
            raise click.BadParameter(f"expected a JSON {'array' if kind is list else 'object'}")
        return parsed

    return parse


def progress_text(done: float, total: float | None, message: str | None) -> str:
    """A progress report in a few characters: ``3/10 resizing``."""
    text = f"{done:g}" if total is None else f"{done:g}/{total:g}"
    return f"{text} {message}" if message else text


def duration(seconds: float) -> str:
    """Seconds as ``12.3ms`` below one second, else ``4.56s``."""
    return f"{seconds * 1000:.3g}ms" if seconds < 1 else f"{seconds:.3g}s"
