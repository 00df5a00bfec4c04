"""Names and ids checked at the edge: queue, task and schedule names, ids.

A name or id with control characters, a ``/``, a ``..`` or more characters than
its envelope field holds is answered with 422 naming the field, before any
broker call: nothing changes. The length limits are the envelope's
(``gopherq.message``), and a schedule name's is its entries' (``MAX_NAME``).

Use ``check_name`` in a route on each path or body value, the ``QueueName``,
``TaskName``, ``ScheduleName`` and ``IdPath`` path parameter types, whose
dependency checks the value and passes it through, or the ``QueueField``,
``TaskField`` and ``IdField`` types in a body model or a query parameter, which
pydantic checks (the error names the field as pydantic's do).
"""

# No ``from __future__ import annotations``: the path checkers' annotations name a
# closure variable, which FastAPI must see evaluated.
from typing import Annotated, Literal

from fastapi import Depends, Path
from pydantic import AfterValidator, Field

from gopherq.message import MAX_ID, MAX_QUEUE, MAX_TASK_NAME
from gopherq.schedules.entry import MAX_NAME
from gopherq.web.problems import invalid

Kind = Literal["queue", "task", "schedule", "id"]

LIMITS: dict[Kind, int] = {
    "queue": MAX_QUEUE,
    "task": MAX_TASK_NAME,
    "schedule": MAX_NAME,
    "id": MAX_ID,
}
"""Most characters of each kind of name."""


def name_problem(kind: Kind, value: str) -> str | None:
    """Why ``value`` cannot be a ``kind`` name, or None if it can."""
    if not value:
        return "is empty"
    if len(value) > LIMITS[kind]:
        return f"is {len(value)} characters long, above the limit of {LIMITS[kind]}"
    if not value.isprintable():
        return "holds a control or unprintable character"
    if "/" in value or ".." in value:
        return "holds '/' or '..'"
    if value != value.strip():
        return "starts or ends with white space"
    return None


PATTERN = r"^[^\x00-\x1f\x7f/]+$"
"""What a name holds, as the OpenAPI document says it: ``name_problem`` also refuses
``..``, other unprintable characters and white space at either end."""


def check_name(kind: Kind, value: str, field: str) -> str:
    """``value`` if it is a valid ``kind`` name; else 422 naming ``field``
    (such as ``path.name`` or ``body.queue``)."""
    problem = name_problem(kind, value)
    if problem:
        raise invalid(field, problem)
    return value


def _path_checker(kind: Kind, parameter: str) -> object:
    limit = LIMITS[kind]

    # A coroutine although it does not await: FastAPI runs a plain function
    # dependency in its thread pool, a hop that costs more than the check.
    async def check(
        value: Annotated[str, Path(alias=parameter, min_length=1, max_length=limit)],
    ) -> str:
        return check_name(kind, value, f"path.{parameter}")

    return Depends(check)


def _field_checker(kind: Kind) -> AfterValidator:
    def check(value: str) -> str:
        problem = name_problem(kind, value)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _field(kind: Kind, example: str) -> object:
    return Field(min_length=1, max_length=LIMITS[kind], pattern=PATTERN, examples=[example])


QueueName = Annotated[str, _path_checker("queue", "name")]
"""A ``{name}`` path parameter holding a queue name, checked."""
TaskName = Annotated[str, _path_checker("task", "name")]
"""A ``{name}`` path parameter holding a task name, checked."""
ScheduleName = Annotated[str, _path_checker("schedule", "name")]
"""A ``{name}`` path parameter holding a schedule entry's name, checked."""
IdPath = Annotated[str, _path_checker("id", "id")]
"""An ``{id}`` path parameter holding a message id, checked."""

QueueField = Annotated[str, _field("queue", "default"), _field_checker("queue")]
"""A queue name in a body or query, checked."""
TaskField = Annotated[str, _field("task", "tasks.add"), _field_checker("task")]
"""A task name in a body or query, checked."""
IdField = Annotated[str, _field("id", "0193a4f6-3c2e-7b1a-9f0e-2d4c6b8a1e3f"), _field_checker("id")]
"""A message id in a body or query, checked."""
