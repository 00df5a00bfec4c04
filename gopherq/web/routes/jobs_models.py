"""The bodies of the jobs resource: what ``POST /jobs`` takes and every jobs route answers.

Times are Unix seconds (floats) unless said otherwise; ``eta`` and ``expires`` also
take ISO 8601 with a UTC offset. Values JSON lacks (bytes, datetimes in a
result) are written as ``gopherq.display.jsonable`` writes them, and a number
that is not finite as its text (``"NaN"``).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from gopherq.display import jsonable
from gopherq.message import MAX_COUNT, MAX_FAIR_KEY, MAX_KEY, MAX_TIMESTAMP
from gopherq.states import State
from gopherq.web.names import QueueField, TaskField
from gopherq.web.routes.events import EventOut

MAX_BATCH = 1000
"""Most jobs one ``POST /jobs:batch`` sends."""


Seconds = Annotated[float, Field(strict=True, ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)]


def _text_only(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("expected ISO 8601 text")  # a number is Seconds, never milliseconds
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_text_only)]
"""ISO 8601 text with an offset."""
PriorityName = Literal["critical", "high", "normal", "low", "bulk"]
PriorityValue = Annotated[int, Field(ge=0, le=4)]


def json_value(value: Any) -> Any:
    """``value`` as JSON can carry it: ``jsonable``, with numbers that are not finite
    as their text."""
    return _finite(jsonable(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class JobSubmit(BaseModel):
    """One job to send: a task by name with its arguments and send options."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"task": "tasks.add", "args": [2, 3]},
                {
                    "task": "tasks.report",
                    "kwargs": {"day": "2026-12-01"},
                    "queue": "reports",
                    "priority": "high",
                    "eta": "2026-12-02T03:00:00Z",
                    "key": "report-2026-12-01",
                },
            ]
        },
    )

    task: TaskField = Field(description="A task registered in the served app.")
    args: list[Any] = Field(default_factory=list, description="Positional arguments.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")
    queue: QueueField | None = Field(None, description="Queue; default: the task's own.")
    priority: PriorityName | PriorityValue | None = Field(
        None, description="critical, high, normal, low, bulk, or 0 (first) to 4."
    )
    countdown: Seconds | None = Field(None, description="Seconds from now before it may run.")
    eta: Seconds | Moment | None = Field(
        None,
        union_mode="left_to_right",
        description="When it may run: Unix seconds, or ISO 8601 with an offset. Not with "
        "countdown.",
    )
    expires: Seconds | Moment | None = Field(
        None,
        union_mode="left_to_right",
        description="Not run after this: seconds from now, or ISO 8601 with an offset.",
    )
    retries: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = Field(
        None, description="Retries on failure; default: the task's."
    )
    key: Annotated[str, Field(min_length=1, max_length=MAX_KEY)] | None = Field(
        None,
        description="Idempotency key: while a job of the queue holds it (queued, scheduled "
        "or running, or finished within its key_ttl), that job answers (200) and nothing is "
        "sent.",
    )
    key_ttl: Seconds | None = Field(
        None,
        description="With key: seconds the key stays held once the job succeeded (a send "
        "meanwhile answers with it); default: the task's key_ttl (24 hours).",
    )
    fair_key: Annotated[str, Field(min_length=1, max_length=MAX_FAIR_KEY)] | None = Field(
        None,
        description="Fair-sharing key, such as a tenant: within a queue and priority, the "
        "keys' jobs take turns. Default: the task's own (its fair_key option).",
    )
    headers: dict[str, Any] = Field(default_factory=dict, description="Message headers.")

    @model_validator(mode="after")
    def _one_schedule(self) -> JobSubmit:
        if self.countdown is not None and self.eta is not None:
            raise ValueError("give countdown or eta, not both")
        return self

    def options(self) -> dict[str, Any]:
        """The send options given (``apply_async``'s names)."""
        names = (
            "queue",
            "priority",
            "countdown",
            "eta",
            "expires",
            "retries",
            "key",
            "key_ttl",
            "fair_key",
            "headers",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) not in (None, {})}


class JobBatch(BaseModel):
    """Jobs to send in one broker call: all of them, or none when one is refused."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"jobs": [{"task": "tasks.add", "args": [1, 2]}, {"task": "tasks.add"}]}]
        },
    )

    jobs: list[JobSubmit] = Field(min_length=1, max_length=MAX_BATCH)


class JobCreated(BaseModel):
    """A job sent, or the live job that already held its idempotency key."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0193a4f6-3c2e-7b1a-9f0e-2d4c6b8a1e3f",
                    "task": "tasks.add",
                    "queue": "default",
                    "new": True,
                }
            ]
        }
    )

    id: str
    task: str
    queue: str
    new: bool = Field(
        description="False: the key was held, this is the earlier job's id (live, or "
        "finished within its key_ttl)."
    )


class CreatedBatch(BaseModel):
    """What a batch sent, in the order of the request."""

    jobs: list[JobCreated]


class ErrorInfoModel(BaseModel):
    """A task's exception, as text."""

    type: str
    message: str
    traceback: str = ""


class ProgressModel(BaseModel):
    """The last progress a task reported."""

    done: float
    total: float | None = None
    message: str | None = None


class JobSummary(BaseModel):
    """A job as listings show it: no result, checkpoint or traceback."""

    id: str
    state: State
    task: str | None = None
    queue: str | None = None
    attempts: int | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    error: ErrorInfoModel | None = None
    progress: ProgressModel | None = None


class JobDetail(JobSummary):
    """Everything known of a job: its record with result or error, and its events."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0193a4f6-3c2e-7b1a-9f0e-2d4c6b8a1e3f",
                    "state": "SUCCEEDED",
                    "task": "tasks.add",
                    "queue": "default",
                    "attempts": 1,
                    "created": 1764644400.25,
                    "started": 1764644400.31,
                    "finished": 1764644400.32,
                    "worker": "worker-1@host",
                    "args": [2, 3],
                    "kwargs": {},
                    "result": 5,
                    "events": [
                        {"type": "task-enqueued", "time": 1764644400.25, "cursor": "17"},
                    ],
                }
            ]
        }
    )

    args: list[Any] | None = Field(
        None,
        description="Its positional arguments while the broker holds its message (queued, "
        "scheduled, running or dead-lettered); null once it is gone or unreadable.",
    )
    kwargs: dict[str, Any] | None = Field(None, description="Its keyword arguments, as args.")
    result: Any = None
    checkpoint: Any = None
    events: list[EventOut] | None = Field(
        None,
        description="The job's retained events, oldest first; null when events are off or "
        "cannot be read now.",
    )


class JobList(BaseModel):
    """A page of jobs, newest (sent) first."""

    jobs: list[JobSummary]
    next: str | None = Field(
        None, description="Pass as cursor for the next page; null when there is none."
    )


class JobResult(BaseModel):
    """A job's outcome: its value once SUCCEEDED, its error once it failed, was
    dead-lettered, cancelled or expired; only its state while it is not finished."""

    id: str
    state: State
    finished: bool
    result: Any = None
    error: ErrorInfoModel | None = None


class JobCancelled(BaseModel):
    """What a cancel did."""

    id: str
    outcome: Literal["cancelled", "stopping"] = Field(
        description="cancelled: it will not run; stopping: running, its worker stops it."
    )


class JobRetried(BaseModel):
    """A dead-lettered job made ready again, under its own id."""

    id: str
    state: State


class JobDeleted(BaseModel):
    """A job forgotten."""

    id: str
    deleted: bool = True
