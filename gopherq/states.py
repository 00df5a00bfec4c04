"""Task states, priorities and dead-letter reasons: the vocabulary shared by every part."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class State(StrEnum):
    """Where a task is in its life.

    ::

        SCHEDULED (eta pending) -> QUEUED -> STARTED -> SUCCEEDED
                                              |-> RETRYING -> QUEUED ...
                                              |-> FAILED (no retries left) -> DEAD
                                              |-> CANCELLED
        QUEUED/SCHEDULED -> CANCELLED | EXPIRED

    ``PENDING`` means the id is unknown, as in Celery.
    """

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    @property
    def finished(self) -> bool:
        """True when the task will not change state again on its own."""
        return self in FINISHED_STATES


FINISHED_STATES = frozenset(
    {State.SUCCEEDED, State.FAILED, State.DEAD, State.CANCELLED, State.EXPIRED}
)


class Priority(IntEnum):
    """Message priority: lower runs first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3
    BULK = 4

    @classmethod
    def parse(cls, value: int | str) -> Priority:
        """Accept a name (``"high"``) or a number (``1``); raise ``ValueError`` otherwise."""
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                if value.isdigit():
                    return cls(int(value))
                names = ", ".join(p.name.lower() for p in cls)
                raise ValueError(f"unknown priority {value!r}; use one of {names} or 0-4") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"priority must be a name or an int 0-4, not {value!r}")
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"priority {value} is out of range 0-4") from None


class DeadReason(StrEnum):
    """Why a message went to the dead-letter queue."""

    DECODE_ERROR = "DECODE_ERROR"  # the bytes are not a valid message
    UNKNOWN_TASK = "UNKNOWN_TASK"  # no task of that name is registered
    BAD_ARGS = "BAD_ARGS"  # the arguments do not fit the task's signature
    EXPIRED = "EXPIRED"  # not started before its expiry time
    MAX_RETRIES = "MAX_RETRIES"  # failed with no retries left
    TIME_LIMIT = "TIME_LIMIT"  # killed by its hard time limit with no retries left
    WORKER_LOST = "WORKER_LOST"  # its worker died more than max_deliveries times
    REJECTED = "REJECTED"  # the task raised Reject
    SIGNATURE_INVALID = "SIGNATURE_INVALID"  # signing is on: unsigned, unknown key or altered
