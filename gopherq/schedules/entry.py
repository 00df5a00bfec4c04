"""A periodic entry: which task to send, with what, and when.

Entries come from code (``@app.periodic``, ``app.add_periodic``), from the
``beat_schedule`` setting, or are added at run time (``app.schedules.add``,
``gopherq schedules add``) and stored in the broker. All are ``Entry`` objects.

Each tick of an entry is one message with a deterministic id and idempotency
key (``tick_id``, ``tick_key``), so that sending the same tick twice stores it
once while the first message exists.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from gopherq.errors import ConfigurationError
from gopherq.message import MAX_KEY, MAX_TIMESTAMP, field_problem
from gopherq.schedules.cron import Cron, Every, Schedule, zone
from gopherq.states import Priority

CatchUp = Literal["latest", "all", "none"]
CATCH_UPS: tuple[CatchUp, ...] = ("latest", "all", "none")

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)\s*([dhms])")


@dataclass(frozen=True)
class Entry:
    """One periodic entry. Exactly one of ``cron`` and ``every`` is set.

    ``queue`` and ``priority`` of None mean the task's own. ``catch_up`` says
    which ticks missed while no beat led are sent: ``"latest"`` (the last one,
    once), ``"all"`` or ``"none"``. ``created`` is when a dynamic entry was
    added: its first tick is the first after that.
    """

    name: str
    task: str
    cron: str | None = None
    every: int | None = None
    """Seconds between ticks, on multiples of it since the Unix epoch."""
    tz: str = "UTC"
    """The IANA time zone a cron expression is read in."""
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    catch_up: CatchUp = "latest"
    paused: bool = False
    created: float | None = None
    schedule: Schedule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or not self.name.isprintable():
            raise ConfigurationError(f"bad periodic entry name {self.name!r}")
        if not self.task:
            raise ConfigurationError(f"periodic entry {self.name!r}: no task")
        # What its messages carry must fit the envelope, or every tick is dead-lettered.
        if len(self.name) > MAX_NAME:
            raise ConfigurationError(
                f"periodic entry name is {len(self.name)} characters long, above the limit"
                f" of {MAX_NAME} (it is part of its messages' idempotency keys)"
            )
        for what, value in (("task", self.task), ("queue", self.queue)):
            problem = field_problem(what, value)
            if problem:
                raise ConfigurationError(f"periodic entry {self.name!r}: {what} {problem}")
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"periodic entry {self.name!r}: give cron or every, not both")
        if self.catch_up not in CATCH_UPS:
            raise ConfigurationError(
                f"periodic entry {self.name!r}: catch_up must be one of {', '.join(CATCH_UPS)}"
            )
        try:
            zone(self.tz)  # with an interval too: a zone that means nothing is a mistake
            schedule: Schedule = Cron(self.cron, self.tz) if self.cron else Every(self.every or 0)
        except ConfigurationError as exc:
            raise ConfigurationError(f"periodic entry {self.name!r}: {exc}") from None
        object.__setattr__(self, "schedule", schedule)
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        if self.priority is not None:
            object.__setattr__(self, "priority", parse_priority(self.priority))

    @property
    def when(self) -> str:
        """The schedule in words: ``every 30s``, ``cron */5 * * * * (Europe/Paris)``."""
        if self.every is not None:
            return f"every {format_every(self.every)}"
        return f"cron {self.cron}" + ("" if self.tz == "UTC" else f" ({self.tz})")

    def to_map(self) -> dict[str, Any]:
        """The entry as a map of plain values (the name aside), for storage."""
        out: dict[str, Any] = {"task": self.task}
        for key in ("cron", "every", "queue", "priority", "created"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.tz != "UTC":
            out["tz"] = self.tz
        if self.args:
            out["args"] = list(self.args)
        if self.kwargs:
            out["kwargs"] = dict(self.kwargs)
        if self.catch_up != "latest":
            out["catch_up"] = self.catch_up
        if self.paused:
            out["paused"] = True
        return out

    @classmethod
    def from_map(cls, name: str, data: Mapping[str, Any]) -> Entry:
        """Build an entry from a map such as a ``beat_schedule`` value or ``to_map`` output.

        ``every`` takes seconds, a ``timedelta`` or text such as ``"1h30m"``; an
        unknown key raises ``ConfigurationError`` with the closest known one.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"periodic entry {name!r} must be a mapping")
        for key in data:
            if key not in _KEYS:
                close = difflib.get_close_matches(str(key), _KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigurationError(f"periodic entry {name!r}: unknown key {key!r}{hint}")
        values = dict(data)
        values["every"] = entry_every(name, values.get("every"))
        values["args"] = tuple(values.get("args") or ())
        values["kwargs"] = dict(values.get("kwargs") or {})
        return cls(name=name, **values)


_KEYS = frozenset(
    f for f in Entry.__dataclass_fields__ if f not in ("name", "schedule")
)  # fmt: skip


def parse_every(value: Any) -> int:
    """Whole seconds from a number, a ``timedelta`` or text: ``30``, ``"30s"``, ``"1h30m"``."""
    seconds: float
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            seconds = float(text)
        else:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise ConfigurationError(
                    f"bad interval {value!r}: use seconds or units, such as 30s, 5m, 1h30m, 1d"
                )
            seconds = float(sum(int(n) * _UNITS[unit] for n, unit in parts))
    else:
        raise ConfigurationError(f"bad interval {value!r}: use seconds, a timedelta or 30s")
    if seconds < 1 or seconds != int(seconds):
        raise ConfigurationError(f"bad interval {value!r}: a whole number of seconds, at least 1")
    if seconds > MAX_TIMESTAMP:
        raise ConfigurationError(f"bad interval {value!r}: at most {MAX_TIMESTAMP:.0f} seconds")
    return int(seconds)


def entry_every(entry: str, value: Any) -> int | None:
    """``parse_every`` for the entry named ``entry``; None stays None."""
    try:
        return None if value is None else parse_every(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"periodic entry {entry!r}: {exc}") from None


def format_every(seconds: int) -> str:
    """``5400`` as ``1h30m``: the form ``parse_every`` reads."""
    out = ""
    for unit, size in _UNITS.items():
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


def parse_priority(value: Any) -> int:
    """A priority name or number as its number; ConfigurationError if unknown."""
    try:
        return int(Priority.parse(cast(int | str, value)))
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def tick_id(entry: str, tick: int) -> str:
    """The message id of ``entry``'s tick at Unix second ``tick``.

    A UUIDv8 laid out as a UUIDv7 (48 bits of milliseconds, then bits of a
    SHA-256 of entry and tick): the same for every beat, and sorting with the
    time-ordered ids of other messages.
    """
    digest = int.from_bytes(hashlib.sha256(f"{entry}\0{tick}".encode()).digest()[:10], "big")
    millis = (tick * 1000) & ((1 << 48) - 1)
    value = millis << 80 | 0x8 << 76 | (digest >> 68) << 64 | 0b10 << 62 | digest & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def tick_key(entry: str, tick: int) -> str:
    """The idempotency key of ``entry``'s tick at Unix second ``tick``."""
    return f"beat:{entry}:{tick}"


MAX_NAME = MAX_KEY - len(tick_key("", int(MAX_TIMESTAMP)))
"""Longest entry name, in characters: the idempotency keys of its ticks must fit."""
