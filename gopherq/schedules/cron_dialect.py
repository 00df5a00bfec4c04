"""The cron dialect gopherq reads: Debian (Vixie) cron, plus seconds, ``L``, ``W`` and ``#``.

``parse(expr)`` checks an expression and rewrites it as one or more plain
croniter expressions whose matches, together, are the expression's matches.
croniter is only ever asked what it gets right; the rest is decided here:

- every value is spelled as a number (names, ``7`` for Sunday, ranges, steps
  and ``*`` inside lists are expanded here), so croniter's reading of ``a-a``
  as ``*`` never comes into play;
- day of month and day of week follow Debian cron: when either field *starts
  with* ``*`` a day must match both (AND), otherwise either (OR). croniter only
  ever sees AND (``day_or=False``) with at most one special day term per field:
  an OR becomes two expressions (the day-of-month one with any day of week,
  and the other way round), and each ``L``, ``W`` or ``#`` term gets its own
  expression, since croniter mixes them badly with other terms.

The matching times of the expression are those of any of its croniter
expressions (see ``Cron`` in ``gopherq.schedules.cron``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product

from gopherq.errors import ConfigurationError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

_TERM = re.compile(
    r"^(?:(?P<star>\*)|(?P<low>\w+)(?:-(?P<high>\w+))?)(?:/(?P<step>\d+))?$", re.ASCII
)
_NTH = re.compile(r"^(?P<day>\w+)#(?P<nth>\d+)$", re.ASCII)


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name: int = 0  # the value of names[0]

    def value(self, text: str, term: str) -> int:
        """A number or a name in ``term``, checked against the field's range."""
        if text in self.names:
            return self.names.index(text) + self.first_name
        if not (text.isascii() and text.isdigit()):
            raise _bad(self, term, self._expected())
        number = int(text)
        if not self.low <= number <= self.high:
            raise _bad(self, term, f"{self.name} goes from {self.low} to {self.high}")
        return number

    def _expected(self) -> str:
        kinds = f"a number from {self.low} to {self.high}"
        if self.names:
            kinds += f" or a name ({self.names[0]}, {self.names[1]}, ...)"
        return f"expected {kinds}"


SECOND = _Field("second", 0, 59)
MINUTE = _Field("minute", 0, 59)
HOUR = _Field("hour", 0, 23)
DAY_OF_MONTH = _Field("day of month", 1, 31)
MONTH = _Field("month", 1, 12, tuple(MONTHS), 1)
DAY_OF_WEEK = _Field("day of week", 0, 7, tuple(DAYS), 0)


@dataclass(frozen=True)
class Parsed:
    """An expression read: the croniter expressions whose matches it is the union of."""

    expressions: tuple[str, ...]
    seconds: bool  # six fields: croniter is told that seconds come first


def parse(expr: str) -> Parsed:
    """Read ``expr``; ConfigurationError (saying which field and why) if it is not valid."""
    text = " ".join(expr.split()).lower()
    if text.startswith("@"):
        if text == "@reboot":
            raise ConfigurationError("@reboot is not supported: a beat has no boot to run at")
        if text not in ALIASES:
            raise ConfigurationError(
                f"unknown cron alias {text!r}; use one of {', '.join(ALIASES)}"
            )
        text = ALIASES[text]
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ConfigurationError(
            f"a cron expression has 5 fields (minute hour day month weekday) or 6 with "
            f"seconds first, not {len(fields)}"
        )
    seconds = len(fields) == 6
    *time_fields, dom, month, dow = fields if seconds else ["0", *fields]
    times = [
        _plain(field, spec) for field, spec in zip(time_fields, (SECOND, MINUTE, HOUR), strict=True)
    ]
    month_values = _plain(month, MONTH)
    doms, dows = _day_of_month(dom), _day_of_week(dow)
    if dom.startswith("*") or dow.startswith("*"):
        days = list(product(doms, dows))  # Debian cron: a field starting with * means AND
    else:
        days = [(d, "*") for d in doms] + [("*", w) for w in dows]
    prefix = " ".join(times if seconds else times[1:])
    return Parsed(tuple(f"{prefix} {d} {month_values} {w}" for d, w in days), seconds)


def _plain(field: str, spec: _Field) -> str:
    """A field of numbers, ranges, steps and names, as croniter should read it."""
    if field == "*":
        return "*"
    values: set[int] = set()
    for term in _terms(field, spec):
        values |= _expand(term, spec)
    if spec is DAY_OF_WEEK:
        values = {v % 7 for v in values}  # 7 is Sunday too
    return ",".join(str(v) for v in sorted(values))


def _expand(term: str, spec: _Field) -> set[int]:
    match = _TERM.match(term)
    if match is None:
        raise _bad(spec, term, "expected a value, a range a-b, * or a step (*/n, a-b/n, a/n)")
    if match["star"]:
        low, high = spec.low, spec.high
    else:
        low = high = spec.value(match["low"], term)
        if match["high"]:
            high = spec.value(match["high"], term)
        elif match["step"]:
            high = spec.high  # a/n runs to the end of the field, as cronie and Quartz read it
        if high < low:
            fix = f"{low}-{spec.high},{spec.low}-{high}"
            raise _bad(spec, term, f"the range goes backwards; write {fix}")
    step = int(match["step"] or 1)
    if step == 0:
        raise _bad(spec, term, "a step must be at least 1")
    return set(range(low, high + 1, step))


def _day_of_month(field: str) -> list[str]:
    """Day-of-month groups for croniter: the plain values together, each L or nW alone."""
    if field == "*":
        return ["*"]
    groups: list[str] = []
    plain: list[str] = []
    for term in _terms(field, DAY_OF_MONTH):
        if term == "l":
            groups.append("L")
        elif term.endswith("w"):
            if term == "lw":
                raise _bad(DAY_OF_MONTH, term, "LW is not supported; use 28-31 with a weekday")
            groups.append(f"{DAY_OF_MONTH.value(term[:-1], term)}W")
        else:
            plain.append(term)
    if plain:
        groups.insert(0, _plain(",".join(plain), DAY_OF_MONTH))
    return groups


def _day_of_week(field: str) -> list[str]:
    """Day-of-week groups for croniter: the plain values together, each nL or d#n alone."""
    if field == "*":
        return ["*"]
    groups: list[str] = []
    plain: list[str] = []
    for term in _terms(field, DAY_OF_WEEK):
        nth = _NTH.match(term)
        if nth:
            number = int(nth["nth"])
            if not 1 <= number <= 5:
                raise _bad(DAY_OF_WEEK, term, "the n of d#n goes from 1 to 5")
            groups.append(f"{DAY_OF_WEEK.value(nth['day'], term) % 7}#{number}")
        elif term.endswith("l") and term != "l":
            groups.append(f"L{DAY_OF_WEEK.value(term[:-1], term) % 7}")  # croniter spells 5L as L5
        else:
            plain.append(term)
    if plain:
        groups.insert(0, _plain(",".join(plain), DAY_OF_WEEK))
    return groups


def _terms(field: str, spec: _Field) -> list[str]:
    terms = field.split(",")
    if "" in terms:
        raise _bad(spec, field, "empty item in a list")
    return terms


def _bad(spec: _Field, term: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"{spec.name} {term!r}: {why}")
