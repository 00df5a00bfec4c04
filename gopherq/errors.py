"""Every exception gopherq raises, under one root.

::

    GopherQError
    ├── ConfigurationError        bad settings, unknown task options, app not found
    ├── BrokerError               the broker failed an operation
    │   ├── BrokerUnavailable     not now: unreachable, disk full, lock held; try later
    │   └── NotSupported          an optional operation this broker does not implement
    ├── SerializationError        a value msgpack cannot carry (names the argument path)
    │   ├── PayloadTooLarge       the encoded message exceeds ``max_message_size``
    │   └── DecodeError           bytes that are not a valid gopherq message
    │       └── SignatureError    unsigned or badly signed, with message signing on
    ├── TaskError
    │   ├── NotRegistered         no task of that name in the app
    │   ├── TaskFailed            the task raised; carries the remote type, message, traceback
    │   ├── ResultTimeout         ``AsyncResult.get`` waited longer than its timeout
    │   ├── SoftTimeLimitExceeded raised inside a task when its soft time limit passes
    │   ├── TimeLimitExceeded     the task's hard time limit killed it
    │   ├── TaskCancelled         the task was cancelled (its record's error)
    │   ├── TaskExpired           not started before its expiry time (record EXPIRED)
    │   └── WorkerLost            its worker died running it (a ``task-retried`` event,
    │                             or dead-lettered ``WORKER_LOST`` past ``max_deliveries``)
    └── ControlFlow               raised by task code to steer the worker, not errors
        ├── Retry                 run the task again later
        ├── Reject                dead-letter the message now, without retrying
        └── RateLimited           not now: put the message back for later

A bad value passed to one call (``apply_async(priority="urgent")``, a queue name
too long) raises the built-in ``ValueError`` (``TypeError`` for a wrong type), as
Python's own functions do; ``ConfigurationError`` is for unknown names and for
bad declarations (task options, settings, periodic entries). See docs/tasks.md.
"""

from __future__ import annotations


class GopherQError(Exception):
    """Root of every gopherq exception."""


class ConfigurationError(GopherQError):
    """Settings, task options or application discovery are wrong."""


class BrokerError(GopherQError):
    """The broker failed to carry out an operation."""


class BrokerUnavailable(BrokerError):
    """The broker cannot serve this now, and trying later may work: it cannot be
    reached, its disk is full, its lock stayed held, an I/O error."""


class NotSupported(BrokerError, NotImplementedError):
    """The broker does not implement this optional operation (``BrokerAdmin``: stats,
    pause, dead-letter listing, cancel, ...); trying later will not help.

    Also a ``NotImplementedError``, which is what it means to Python code.
    """

    def __init__(self, broker: str, operation: str) -> None:
        super().__init__(
            f"{broker} does not support {operation}(): an optional broker operation "
            "it does not implement (see docs/brokers.md, Writing a broker)"
        )
        self.broker = broker
        """Which broker: its class and redacted URL."""
        self.operation = operation
        """The method's name, as in ``BrokerAdmin``."""


class SerializationError(GopherQError):
    """A value cannot be encoded or decoded."""


class PayloadTooLarge(SerializationError):
    """The encoded message is larger than the configured ``max_message_size``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message is {size} bytes, above the limit of {limit} bytes "
            "(setting max_message_size); pass a reference to the data instead"
        )
        self.size = size
        self.limit = limit


class DecodeError(SerializationError):
    """Bytes that are not a valid gopherq message."""


class SignatureError(DecodeError):
    """With message signing on: a message unsigned, signed with an unknown key, or
    altered since it was signed (dead-lettered ``SIGNATURE_INVALID``)."""


class TaskError(GopherQError):
    """Errors about tasks and their outcomes."""


class NotRegistered(TaskError):
    """No task of that name is registered in the app."""


class TaskFailed(TaskError):
    """The task failed remotely.

    Carries what the worker recorded: the exception type name, its message and
    the formatted traceback. No class is ever imported from stored data.
    """

    def __init__(self, task_id: str, type_name: str, message: str, traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.task_id = task_id
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class ResultTimeout(TaskError, TimeoutError):
    """Waiting for a result took longer than the timeout."""


class SoftTimeLimitExceeded(TaskError):
    """Raised inside a running task when its soft time limit passes."""


class TimeLimitExceeded(TaskError):
    """The task ran past its hard time limit and its process was killed."""


class TaskCancelled(TaskError):
    """The task was cancelled: before it started, or while it ran."""


class TaskExpired(TaskError):
    """The task was not started before its expiry time (``expires``): its record's error
    when it ends EXPIRED."""


class WorkerLost(TaskError):
    """The worker running the task died (or its lease ran out): the error type of the
    ``task-retried`` event that redelivers it, and of its record when it is dead-lettered
    ``WORKER_LOST`` after ``max_deliveries``."""


class ControlFlow(GopherQError):
    """Exceptions task code raises to steer the worker."""


class Retry(ControlFlow):
    """Run the task again, after ``countdown`` seconds (or the task's backoff).

    What ``current_task().retry(...)`` raises.
    """

    def __init__(self, countdown: float | None = None, exc: BaseException | None = None) -> None:
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "retry requested"
        super().__init__(reason)
        self.countdown = countdown
        self.exc = exc


class Reject(ControlFlow):
    """Dead-letter the message at once with reason ``REJECTED``, without retrying."""


class RateLimited(ControlFlow):
    """Not now (an HTTP 429 with ``Retry-After``): run the task again after
    ``retry_after`` seconds, without using a retry (no attempt is counted).

    Raised several times in a row for one task type (``RATE_LIMITED_IN_A_ROW`` in
    ``gopherq.worker.rates``), it pauses that whole task type for ``retry_after``
    seconds on every worker, not only this message. See docs/flow-control.md.
    """

    def __init__(self, retry_after: float) -> None:
        if isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)):
            raise TypeError(f"retry_after must be a number of seconds, not {retry_after!r}")
        if not 0 <= retry_after < 366 * 86400:
            raise ValueError(f"retry_after must be 0 to 1 year of seconds, not {retry_after!r}")
        super().__init__(f"rate limited, again in {retry_after:.3f}s")
        self.retry_after = float(retry_after)
