"""Unique tasks and how long an idempotency key is held.

A send with an idempotency key (``apply_async(key=...)``, or the key a task with
``unique=True`` derives from its arguments) stores nothing while the key is held
and returns the holder's ``AsyncResult``. The task option ``unique_until`` says
when the key is free again, and the broker does it (``Envelope.key_ttl`` and
``Envelope.key_until_start``, see ``gopherq.brokers.base``):

- ``"start"``: once the job starts (a worker reserves it);
- ``"finish"``: once the job is settled (succeeded, failed, cancelled);
- ``"ttl"`` (the default): as ``"finish"``, but a job that succeeded keeps the key
  for ``key_ttl`` seconds more (task option, or send option; 24 hours by default):
  a send meanwhile returns the finished job, whose ``.get()`` gives its result.
  The hold is capped at ``result_expires``, so the key never answers with a job
  whose result is gone.

A job that fails for good (dead-lettered) or is cancelled or deleted frees its
key in every mode: it can be sent again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from gopherq.errors import ConfigurationError
from gopherq.message import MAX_TIMESTAMP

if TYPE_CHECKING:
    from gopherq.serializer import Codec
    from gopherq.task import TaskOptions

UniqueUntil = Literal["start", "finish", "ttl"]
UNIQUE_UNTIL: tuple[UniqueUntil, ...] = ("start", "finish", "ttl")
DEFAULT_KEY_TTL = 86400.0
"""Seconds a finished job's key stays held by default (``unique_until="ttl"``)."""


def unique_key(codec: Codec, task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The idempotency key of a ``unique=True`` task's send: a digest of the task name
    and the msgpack of its arguments (keyword arguments in name order; maps inside
    arguments count in their own order). Raises ``SerializationError`` as a send
    does for arguments that do not encode."""
    packed = codec.pack([task, list(args), sorted(kwargs.items())], what="arguments")
    return hashlib.blake2b(packed, digest_size=16).hexdigest()


def key_ttl_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a ``key_ttl``, or None if it can."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"takes a number of seconds or a timedelta, not {value!r}"
    if not (math.isfinite(value) and 0 <= value <= MAX_TIMESTAMP):
        return f"must be a finite number of seconds, 0 or more, not {value!r}"
    return None


def check_task_options(values: dict[str, Any]) -> None:
    """Check ``unique``, ``unique_until`` and ``key_ttl`` of ``@app.task(...)``'s
    ``values`` (``ConfigurationError``, one line); ``key_ttl`` becomes seconds."""
    if not isinstance(values.get("unique", False), bool):
        raise ConfigurationError(
            f"task option unique takes True or False, not {values['unique']!r}"
        )
    until = values.get("unique_until", "ttl")
    if until not in UNIQUE_UNTIL:
        choices = ", ".join(map(repr, UNIQUE_UNTIL))
        raise ConfigurationError(
            f"task option unique_until must be one of {choices}, not {until!r}"
        )
    if "key_ttl" in values:
        problem = key_ttl_problem(values["key_ttl"])
        if problem:
            raise ConfigurationError(f"task option key_ttl {problem}")
        values["key_ttl"] = seconds(values["key_ttl"])


def seconds(value: float | dt.timedelta) -> float:
    """A ``key_ttl`` (checked by ``key_ttl_problem``) in seconds."""
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def key_hold(
    options: TaskOptions, send_options: Mapping[str, Any], result_expires: float
) -> tuple[float | None, bool]:
    """``Envelope.key_ttl`` and ``Envelope.key_until_start`` of a keyed send of a task
    with ``options``, given the send's options (their ``key_ttl`` wins)."""
    if options.unique_until == "start":
        return None, True
    if options.unique_until == "finish":
        return None, False
    ttl = send_options.get("key_ttl")
    ttl = options.key_ttl if ttl is None else seconds(ttl)
    return min(ttl, result_expires) or None, False
