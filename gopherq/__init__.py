"""gopherq: a fast, reliable background task framework.

::

    app = GopherQ("myapp")

    @app.task(retries=3)
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(2, 3).get(timeout=10)
"""

from __future__ import annotations

from gopherq.app import GopherQ
from gopherq.context import TaskContext, current_task
from gopherq.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    ControlFlow,
    DecodeError,
    GopherQError,
    NotRegistered,
    NotSupported,
    PayloadTooLarge,
    RateLimited,
    Reject,
    ResultTimeout,
    Retry,
    SerializationError,
    SignatureError,
    SoftTimeLimitExceeded,
    TaskCancelled,
    TaskError,
    TaskExpired,
    TaskFailed,
    TimeLimitExceeded,
    WorkerLost,
)
from gopherq.events import Event
from gopherq.message import Message
from gopherq.middleware import Middleware, WorkerInfo, WorkerStats
from gopherq.once import once
from gopherq.result import AsyncResult, EagerResult
from gopherq.results.base import Progress
from gopherq.runner import Outcome
from gopherq.states import DeadReason, Priority, State
from gopherq.task import AsyncTask, BaseTask, Signature, Task, TaskOptions
from gopherq.version import __version__

__all__ = [
    "AsyncResult",
    "AsyncTask",
    "BaseTask",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigurationError",
    "ControlFlow",
    "DeadReason",
    "DecodeError",
    "EagerResult",
    "Event",
    "GopherQ",
    "GopherQError",
    "Message",
    "Middleware",
    "NotRegistered",
    "NotSupported",
    "Outcome",
    "PayloadTooLarge",
    "Priority",
    "Progress",
    "RateLimited",
    "Reject",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Signature",
    "SignatureError",
    "SoftTimeLimitExceeded",
    "State",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskExpired",
    "TaskFailed",
    "TaskOptions",
    "TimeLimitExceeded",
    "WorkerInfo",
    "WorkerLost",
    "WorkerStats",
    "__version__",
    "current_task",
    "once",
]
