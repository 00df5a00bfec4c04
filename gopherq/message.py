"""The message envelope: one task execution request, as plain data.

On the wire it is one msgpack map (see ``serializer``). Fields equal to their
defaults are left out, so that producers in other languages (the HTTP API) can
submit a task by name with nothing but ``v``, ``id``, ``task`` and arguments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import uuid_utils

from gopherq.errors import DecodeError

ENVELOPE_VERSION = 1
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 2


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
        out["created"] = self.created
        return out

    @classmethod
    def from_map(cls, data: Any) -> Message:
        """Validate a decoded envelope map; raise ``DecodeError`` naming the bad field."""
        if not isinstance(data, dict):
            raise DecodeError(f"envelope must be a map, not {type(data).__name__}")
        version = data.get("v")
        if version != ENVELOPE_VERSION:
            raise DecodeError(f"unsupported envelope version {version!r}")
        if not data.keys() <= _KEYS:
            unknown = data.keys() - _KEYS
            raise DecodeError(f"unknown envelope fields: {', '.join(sorted(map(str, unknown)))}")
        # A nil field means its default, as if it were left out. No field takes a
        # bool, which is an int to isinstance.
        fields = {k: v for k, v in data.items() if k != "v" and v is not None}
        missing = _REQUIRED - fields.keys()
        wrong = {
            k
            for k, v in fields.items()
            if isinstance(v, bool) or not isinstance(v, _FIELD_TYPES[k])
        }
        if missing or wrong:
            name = next(k for k in _FIELD_TYPES if k in missing or k in wrong)  # the first
            problem = "is missing" if name in missing else f"has type {type(fields[name]).__name__}"
            raise DecodeError(f"envelope field {name!r} {problem}")
        if not 0 <= fields.get("priority", 0) <= 4:
            raise DecodeError("envelope field 'priority' is out of range 0-4")
        if any(not isinstance(k, str) for k in fields.get("kwargs", ())):
            raise DecodeError("envelope field 'kwargs' has a key that is not a string")
        if "created" not in fields:
            fields["created"] = 0.0
        return cls(**fields)


_OPTIONAL = ("eta", "expires", "retries", "timeout", "key", "deps", "parent", "root", "group")
_REQUIRED = frozenset({"id", "task"})
_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "task": (str,),
    "args": (list,),
    "kwargs": (dict,),
    "queue": (str,),
    "priority": (int,),
    "eta": _NUMBER,
    "expires": _NUMBER,
    "attempt": (int,),
    "retries": (int,),
    "timeout": _NUMBER,
    "key": (str,),
    "deps": (list,),
    "parent": (str,),
    "root": (str,),
    "group": (str,),
    "headers": (dict,),
    "created": _NUMBER,
}
_KEYS = frozenset({"v", *_FIELD_TYPES})
