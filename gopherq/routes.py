"""Task routes: the queue (and priority) of tasks chosen by name, as Celery's ``task_routes``.

::

    app = GopherQ("shop", task_routes={
        "shop.mail.*": {"queue": "mail"},             # a glob pattern
        "shop.report.nightly": {"queue": "reports", "priority": "low"},
        "shop.images.*": "images",                    # a queue name alone
    })

An exact name is looked up first, then the patterns (``fnmatch`` globs: ``*``,
``?``, ``[...]``) in the order given; the first match wins. A route gives a
task its default queue and priority when it is declared (``@app.task``), or
when it is sent by name without being registered (``send_task``): a
``queue=``/``priority=`` given to ``@app.task`` wins over the route, and one
given at send time wins over both. Workers consume routed queues by default,
since their default queues are those of the registered tasks.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gopherq.celery_names import ROUTE_KEY_HINTS, unknown
from gopherq.errors import ConfigurationError
from gopherq.message import field_problem
from gopherq.states import Priority

if TYPE_CHECKING:
    from gopherq.app import GopherQ

ROUTE_KEYS = frozenset({"queue", "priority"})
"""What a route may set."""


class Routes:
    """The routes of one app, checked when built; ``match(name)`` is what applies."""

    __slots__ = ("_exact", "_patterns", "table")

    def __init__(self, table: Mapping[str, Any] | None) -> None:
        self.table = table
        """The ``task_routes`` setting these routes were built from."""
        self._exact: dict[str, dict[str, Any]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Any]]] = []
        for pattern, route in (table or {}).items():
            if not isinstance(pattern, str) or not pattern:
                raise ConfigurationError(
                    f"task_routes: a pattern must be a task name, not {pattern!r}"
                )
            options = _route_options(pattern, route)
            if any(c in pattern for c in "*?["):
                self._patterns.append((re.compile(fnmatch.translate(pattern)), options))
            else:
                self._exact[pattern] = options

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)

    def match(self, name: str) -> dict[str, Any]:
        """The options the route of task ``name`` sets (``queue``, ``priority``), or none."""
        options = self._exact.get(name)
        if options is not None:
            return dict(options)
        for regex, options in self._patterns:
            if regex.match(name):
                return dict(options)
        return {}


def _route_options(pattern: str, route: Any) -> dict[str, Any]:
    """A route's options, checked: a queue name, or a map of ``queue`` and ``priority``."""
    where = f" in task_routes[{pattern!r}]"
    if isinstance(route, str):
        route = {"queue": route}
    if not isinstance(route, Mapping):
        raise ConfigurationError(
            f"task_routes[{pattern!r}] must be a queue name or a map such as "
            f"{{'queue': 'mail'}}, not {route!r}"
        )
    for key in route:
        if key not in ROUTE_KEYS:
            raise unknown("route key", key, ROUTE_KEYS, ROUTE_KEY_HINTS, where)
    options = dict(route)
    if "queue" in options:
        problem = field_problem("queue", options["queue"]) or (
            "is missing" if options["queue"] is None else None
        )
        if problem:
            raise ConfigurationError(f"task_routes[{pattern!r}]: queue {problem}")
    if "priority" in options:
        try:
            options["priority"] = int(Priority.parse(options["priority"]))
        except ValueError as exc:
            raise ConfigurationError(f"task_routes[{pattern!r}]: {exc}") from None
    return options


def declared_queues(app: GopherQ) -> list[str]:
    """The queues the app's tasks go to: the default queue and every queue a registered
    task is declared on or routed to (what a worker consumes by default)."""
    names = {app.settings.default_queue} | {task.options.queue for task in app.tasks.values()}
    return sorted(names)
