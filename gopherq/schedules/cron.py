"""When periodic entries fire: cron expressions in a time zone, and fixed intervals.

Ticks are whole Unix seconds. Both kinds answer the same two questions:
``next_after(t)`` (the first tick strictly after ``t``) and ``latest_at(t)``
(the last tick at or before ``t``).

Cron: croniter matches expressions against *naive local wall-clock times* (it
never sees a time zone); this module maps each matching local time to the
instant it fires in the entry's zone, by these rules:

- a local time that happens once fires at that instant;
- a local time that happens twice (clocks go back) fires once, at its first
  occurrence: an every-minute entry is quiet during the repeated hour;
- a local time that does not exist (clocks go forward) fires at the instant
  the clocks jump, the first valid instant after it; several such times in one
  gap (``*/5`` across a one-hour gap) fire once there, together with any entry
  for the first valid local time itself.

That map never goes backwards as local time goes forward, so ticks strictly
increase, and both questions are answered from the largest local time reached
so far, without scanning.

Which local times match is the cron dialect of ``gopherq.schedules.cron_dialect``
(Debian cron, plus seconds, ``L``, ``W`` and ``#``): it rewrites an expression
as one or more croniter expressions, and a local time matches when any of them
does. Five fields are standard cron (minute resolution); six fields put
*seconds first* (``*/10 * * * * *``: every ten seconds), as Quartz and Spring do.

Intervals: ``every`` seconds, on multiples of ``every`` since the Unix epoch
(UTC), so that every beat computes the same ticks without sharing a start.
"""

from __future__ import annotations

import datetime as dt
import math
from abc import ABC, abstractmethod
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from gopherq.errors import ConfigurationError
from gopherq.schedules.cron_dialect import parse

_CRONITER_ERRORS = (CroniterBadCronError, CroniterBadDateError, CroniterError, ValueError)

ONE_SECOND = dt.timedelta(seconds=1)


class Schedule(ABC):
    """When an entry fires: ticks in whole Unix seconds."""

    @abstractmethod
    def next_after(self, t: float) -> int:
        """The first tick strictly after ``t``."""

    @abstractmethod
    def latest_at(self, t: float) -> int | None:
        """The last tick at or before ``t`` (None if there is none)."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the schedule: when it changes, missed ticks are not caught up."""


class Every(Schedule):
    """Every ``seconds`` seconds, on multiples of ``seconds`` since the epoch."""

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or seconds < 1 or seconds != int(seconds):
            raise ConfigurationError(
                f"every must be a whole number of seconds, at least 1, not {seconds!r}"
            )
        self.seconds = int(seconds)

    def next_after(self, t: float) -> int:
        """The next multiple of ``seconds`` after ``t``."""
        return (math.floor(t) // self.seconds + 1) * self.seconds

    def latest_at(self, t: float) -> int:
        """The last multiple of ``seconds`` at or before ``t``."""
        return math.floor(t) // self.seconds * self.seconds

    @property
    def fingerprint(self) -> str:
        return f"every {self.seconds}"

    def __repr__(self) -> str:
        return f"Every({self.seconds})"


class Cron(Schedule):
    """A cron expression evaluated in time zone ``tz``; see the module docstring."""

    def __init__(self, expr: str, tz: str = "UTC") -> None:
        self.expr = " ".join(expr.split())
        self.tz = tz
        self.zone = zone(tz)
        try:
            parsed = parse(self.expr)
        except ConfigurationError as exc:
            raise ConfigurationError(f"bad cron expression {expr!r}: {exc}") from None
        self._seconds = parsed.seconds
        # Parts that can never match (day 31 in February, in an OR with a day of
        # week that can) are left out; the expression is bad only if all of them are.
        try:
            self._parts = tuple(p for p in parsed.expressions if self._matches_ever(p))
        except _CRONITER_ERRORS as exc:
            raise ConfigurationError(f"bad cron expression {expr!r}: {exc}") from None
        if not self._parts:
            raise ConfigurationError(f"bad cron expression {expr!r}: it never matches")

    def next_after(self, t: float) -> int:
        """The first tick strictly after ``t``."""
        start = self._reached(math.floor(t))
        nexts, error = [], None
        for part in self._parts:
            try:
                nexts.append(self._iter(part, start).get_next(dt.datetime))
            except CroniterBadDateError as exc:  # none within croniter's search window
                error = exc
        if not nexts:
            raise error or CroniterBadDateError("no next tick")
        return self._instant(min(nexts))

    def latest_at(self, t: float) -> int | None:
        """The last tick at or before ``t``."""
        start = self._reached(math.floor(t)) + ONE_SECOND
        prevs = []
        for part in self._parts:
            try:
                prevs.append(self._iter(part, start).get_prev(dt.datetime))
            except CroniterBadDateError:
                continue
        return self._instant(max(prevs)) if prevs else None

    @property
    def fingerprint(self) -> str:
        return f"cron {self.expr} {self.tz}"

    def _iter(self, part: str, start: dt.datetime) -> croniter:
        # AND: the dialect has already turned cron's OR of days into separate parts.
        return croniter(part, start, day_or=False, second_at_beginning=self._seconds)

    def _matches_ever(self, part: str) -> bool:
        try:
            self._iter(part, dt.datetime(1970, 1, 1)).get_next(dt.datetime)
        except CroniterBadDateError:
            return False
        return True

    def _wall(self, t: int) -> dt.datetime:
        """The naive local wall-clock time at instant ``t``."""
        return dt.datetime.fromtimestamp(t, self.zone).replace(tzinfo=None)

    def _reached(self, t: int) -> dt.datetime:
        """The largest local time on the clock at or before instant ``t``.

        It is the wall time of ``t``, except during the second pass of a repeated
        hour, where the clock has already shown later times before it went back.
        """
        wall = self._wall(t)
        first = self._instant(wall)  # the first occurrence of this wall time
        if first == t:
            return wall
        return self._wall(self._jump(first, t) - 1)  # the last second before it went back

    def _instant(self, local: dt.datetime) -> int:
        """The instant a matching local time fires (see the module docstring)."""
        early = int(local.replace(tzinfo=self.zone, fold=0).timestamp())
        late = int(local.replace(tzinfo=self.zone, fold=1).timestamp())
        if early <= late:  # it happens once, or twice and the first occurrence fires
            return early
        # It does not exist: fold=0 read it with the offset before the jump (a later
        # instant), fold=1 with the offset after; the jump lies in between.
        return self._jump(late, early)

    def _jump(self, before: int, after: int) -> int:
        """The first instant in (before, after] with the UTC offset of ``after``."""
        offset = self._offset(after)
        while after - before > 1:
            middle = (before + after) // 2
            if self._offset(middle) == offset:
                after = middle
            else:
                before = middle
        return after

    def _offset(self, t: int) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(t, self.zone).utcoffset()

    def __repr__(self) -> str:
        return f"Cron({self.expr!r}, tz={self.tz!r})"


def zone(name: str) -> ZoneInfo:
    """The time zone ``name`` (IANA, such as ``Europe/Paris``); ConfigurationError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown time zone {name!r}; use an IANA name") from None
