"""The message envelope: one task execution request, as plain data.

On the wire it is one msgpack map (see ``serializer``). Fields equal to their
defaults are left out, so that producers in other languages (the HTTP API) can
submit a task by name with nothing but ``v``, ``id``, ``task`` and arguments.

Every field is bounded (the limits below, listed in docs/messages.md), so that
no message, whoever wrote it, can carry a value the worker, the brokers or the
result stores cannot handle: a 40 KB task name, a ``NaN`` time, a negative
attempt count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import uuid_utils

from gopherq.errors import DecodeError

ENVELOPE_VERSION = 1
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 2

SIGNED = "gq-sig"
"""The first item of a signed body (see ``gopherq.signing``)."""

MAX_ID = 128
"""Longest task id, in characters; also ``parent``, ``root``, ``group`` and each of ``deps``."""
MAX_TASK_NAME = 256
"""Longest task name, in characters."""
MAX_QUEUE = 128
"""Longest queue name, in characters."""
MAX_KEY = 256
"""Longest idempotency key, in characters."""
MAX_FAIR_KEY = 200
"""Longest fair-sharing key (``fair``), in characters."""
MAX_DEPS = 1000
"""Most ids in ``deps``."""
MAX_HEADERS = 64
"""Most user headers."""
MAX_HEADER_KEY = 128
"""Longest header name, in characters."""
MAX_HEADERS_SIZE = 16 * 1024
"""Largest ``headers`` map, in bytes of msgpack."""
MAX_TIMESTAMP = 253_402_300_799.0
"""Latest unix time a field may hold (9999-12-31 23:59:59 UTC, the last second a
``datetime`` can show); also the bound of ``timeout``. NaN and infinities are out."""
MAX_COUNT = 2**31 - 1
"""Largest ``attempt`` and ``retries``."""


def new_id() -> str:
    """A unique, URL-safe, time-sortable task id (UUIDv7)."""
    return str(uuid_utils.uuid7())


@dataclass(slots=True)
class Message:
    """One task execution request; the fields of the envelope in DESIGN.md."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    eta: float | None = None
    expires: float | None = None
    attempt: int = 0
    retries: int | None = None
    timeout: float | None = None
    key: str | None = None
    fair_key: str | None = None
    """Fair-sharing key (envelope field ``fair``): within its queue and priority, ready
    messages of different keys take turns; also the bucket of ``rate_limit_per_key``."""
    deps: list[str] | None = None
    parent: str | None = None
    root: str | None = None
    group: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def to_map(self) -> dict[str, Any]:
        """The envelope as a map, leaving out fields that hold their defaults."""
        out: dict[str, Any] = {"v": ENVELOPE_VERSION, "id": self.id, "task": self.task}
        if self.args:
            out["args"] = self.args
        if self.kwargs:
            out["kwargs"] = self.kwargs
        if self.queue != DEFAULT_QUEUE:
            out["queue"] = self.queue
        if self.priority != DEFAULT_PRIORITY:
            out["priority"] = self.priority
        if self.attempt:
            out["attempt"] = self.attempt
        if self.headers:
            out["headers"] = self.headers
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.fair_key is not None:
            out["fair"] = self.fair_key
        out["created"] = self.created
        return out

    @classmethod
    def from_map(cls, data: Any) -> Message:
        """Validate a decoded envelope map; raise ``DecodeError`` naming the bad field.

        Each field present must have its type and lie within its bounds (the
        limits above); the error names the first bad field in envelope order.
        """
        if not isinstance(data, dict):
            if isinstance(data, list) and data[:1] == [SIGNED]:
                raise DecodeError("the message is signed; set signing_keys to verify it")
            raise DecodeError(f"envelope must be a map, not {type(data).__name__}")
        version = data.get("v")
        if version != ENVELOPE_VERSION:
            raise DecodeError(f"unsupported envelope version {version!r}")
        if not data.keys() <= _KEYS:
            unknown = data.keys() - _KEYS
            raise DecodeError(f"unknown envelope fields: {', '.join(sorted(map(str, unknown)))}")
        # A nil field means its default, as if it were left out.
        fields = {k: v for k, v in data.items() if k != "v" and v is not None}
        # The hot path: one pass over the fields present, the error text worked out
        # only when one is bad. No field takes a bool (an int to isinstance), and a
        # comparison with NaN is false, so NaN is out of bounds.
        for name, value in fields.items():
            kinds, sized, low, high = _SPEC[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, kinds)
                or not low <= (len(value) if sized else value) <= high
            ):
                raise DecodeError(_first_problem(fields))
        if "id" not in fields or "task" not in fields:
            raise DecodeError(_first_problem(fields))
        # What lies inside these maps and arrays, only when they are present.
        if (
            ("kwargs" in fields and _kwargs_problem(fields["kwargs"]))
            or ("deps" in fields and _deps_problem(fields["deps"]))
            or ("headers" in fields and _headers_problem(fields["headers"]))
        ):
            raise DecodeError(_first_problem(fields))
        if "created" not in fields:
            fields["created"] = 0.0
        if "fair" in fields:
            fields["fair_key"] = fields.pop("fair")
        return cls(**fields)


def field_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be envelope field ``name``, or None if it can (or is None).

    The rules ``Message.from_map`` applies, for checks made before a message
    exists, such as a task's name and queue when it is declared.
    """
    if value is None:
        return None
    kinds, sized, low, high = _SPEC[name]
    if isinstance(value, bool) or not isinstance(value, kinds):
        return f"has type {type(value).__name__}"
    if not low <= (len(value) if sized else value) <= high:
        return _out_of_bounds(name, value)
    inner = _INNER.get(name)
    return inner(value) if inner is not None else None


def _kwargs_problem(kwargs: dict[Any, Any]) -> str | None:
    if all(isinstance(key, str) for key in kwargs):
        return None
    return "has a key that is not a string"


def _deps_problem(deps: list[Any]) -> str | None:
    for dep in deps:
        if not isinstance(dep, str) or not 1 <= len(dep) <= MAX_ID:
            return f"holds an id that is not a string of 1-{MAX_ID} characters: {dep!r:.80}"
    return None


def _headers_problem(headers: dict[Any, Any]) -> str | None:
    # Text headers (trace context) are sized without packing them: a string of n
    # characters packs into at most 5 + 4n bytes, a map header into at most 5.
    bound: int | None = 5
    for key, value in headers.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_HEADER_KEY:
            return f"has a name that is not a string of 1-{MAX_HEADER_KEY} characters: {key!r:.80}"
        if bound is not None:
            bound = bound + 10 + 4 * (len(key) + len(value)) if isinstance(value, str) else None
    if bound is not None and bound <= MAX_HEADERS_SIZE:
        return None
    # Extension values (datetime, UUID, ...) count as their text: near enough.
    size = len(msgpack.packb(headers, default=str))
    if size > MAX_HEADERS_SIZE:
        return f"is {size} bytes of msgpack, above the limit of {MAX_HEADERS_SIZE}"
    return None


_INNER: dict[str, Callable[[Any], str | None]] = {
    "kwargs": _kwargs_problem,
    "deps": _deps_problem,
    "headers": _headers_problem,
}


def _first_problem(fields: dict[str, Any]) -> str:
    """The error for the first bad field, in envelope order, of an envelope with one."""
    for name in _SPEC:
        if name not in fields:
            if name in _REQUIRED:
                return f"envelope field {name!r} is missing"
            continue
        problem = field_problem(name, fields[name])
        if problem:
            return f"envelope field {name!r} {problem}"
    raise AssertionError("no bad field")  # pragma: no cover


def _out_of_bounds(name: str, value: Any) -> str:
    """What is wrong with a value (of the right type) outside its field's bounds."""
    _, sized, low, high = _SPEC[name]
    if isinstance(value, str):
        if not value:
            return "is empty"
        return f"is {len(value)} characters long, above the limit of {high:.0f}"
    if sized:
        unit = {"deps": "ids", "headers": "headers"}.get(name, "items")
        return f"holds {len(value)} {unit}, above the limit of {high:.0f}"
    if not math.isfinite(value):
        return f"is not a finite number: {value!r}"
    if low == _POSITIVE and value <= 0:
        return f"must be a positive number of seconds, not {value!r}"
    return f"is out of range {low:.0f}-{high:.0f}: {value!r}"


_OPTIONAL = ("eta", "expires", "retries", "timeout", "key", "deps", "parent", "root", "group")
_REQUIRED = frozenset({"id", "task"})
_TEXT, _LIST, _MAP, _INT, _NUMBER = (str,), (list,), (dict,), (int,), (int, float)
_TIME = (_NUMBER, False, 0, MAX_TIMESTAMP)
_POSITIVE = math.ulp(0.0)  # the least number above 0: a hard time limit of 0 kills at once
_SPEC: dict[str, tuple[tuple[Any, ...], bool, float, float]] = {
    # Field: (types, sized, least, most). Sized fields are bounded by their length
    # (characters, items), numbers by their value.
    "id": (_TEXT, True, 1, MAX_ID),
    "task": (_TEXT, True, 1, MAX_TASK_NAME),
    "args": (_LIST, True, 0, math.inf),
    "kwargs": (_MAP, True, 0, math.inf),
    "queue": (_TEXT, True, 1, MAX_QUEUE),
    "priority": (_INT, False, 0, 4),
    "eta": _TIME,
    "expires": _TIME,
    "attempt": (_INT, False, 0, MAX_COUNT),
    "retries": (_INT, False, 0, MAX_COUNT),
    "timeout": (_NUMBER, False, _POSITIVE, MAX_TIMESTAMP),
    "key": (_TEXT, True, 0, MAX_KEY),
    "fair": (_TEXT, True, 1, MAX_FAIR_KEY),
    "deps": (_LIST, True, 0, MAX_DEPS),
    "parent": (_TEXT, True, 0, MAX_ID),
    "root": (_TEXT, True, 0, MAX_ID),
    "group": (_TEXT, True, 0, MAX_ID),
    "headers": (_MAP, True, 0, MAX_HEADERS),
    "created": _TIME,
}
_KEYS = frozenset({"v", *_SPEC})
