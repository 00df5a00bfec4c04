"""Rate limits as values: ``"100/s"`` parsed into a ``Rate``, and what the broker keeps.

``parse_rate`` is the one grammar of every rate: tasks' rate limits, the limits
set at run time, and API keys' send rates (``gopherq.access.rate``).

A ``Rate`` is a number of runs per period plus a ``burst``: how many may start at
once after a quiet spell. The broker enforces it with GCRA (the generic cell rate
algorithm): each limit key has a theoretical arrival time (TAT); a message claims
the slot ``max(TAT, now) - (burst - 1) * interval`` and moves the TAT one
``interval`` on. A slot not later than now runs at once, a later one waits for it.
So runs never exceed ``burst`` at once nor the rate over any longer span, and the
slots of messages that must wait lie exactly one interval apart, in the order they
were claimed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from gopherq.errors import ConfigurationError

PERIODS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
"""Units of a rate and their seconds (the first of each is how ``str(rate)`` writes it)."""
NO_LIMIT = ("", "none", "off")
"""Texts that ``parse_optional_rate`` reads as no limit."""
MAX_BURST = 1_000_000
"""Largest ``burst``."""
REFRESH_EVERY = 1.0
"""Seconds between two reads of the run-time rate-limit table by one worker process."""
KEY_SEPARATOR = "\x1f"
"""Between a task name and a fair key in the limit key of ``rate_limit_per_key``."""

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]+))?\s*", re.IGNORECASE)
_FORM = (
    "a number of runs per second, minute, hour or day, such as '100/s', '30/m', '5/h' "
    "or '1000/d' ('100': per second)"
)


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` runs per ``period`` seconds, ``burst`` of them at once."""

    count: float
    period: float
    burst: int = 1

    @property
    def interval(self) -> float:
        """Seconds between two slots."""
        return self.period / self.count

    @property
    def per_second(self) -> float:
        """Runs per second, on average."""
        return self.count / self.period

    def __str__(self) -> str:
        unit = next(letter for letter, seconds in PERIODS.items() if seconds == self.period)
        count = int(self.count) if float(self.count).is_integer() else self.count
        return f"{count}/{unit}"


def parse_rate(text: object, burst: object = None, *, what: str = "rate_limit") -> Rate:
    """``"100/s"`` with an optional ``burst`` as a ``Rate``: a count (a fraction too)
    per unit of ``PERIODS`` (``s`` or ``sec``, ``m`` or ``min``, ``h``, ``d``; any
    case), or a bare count per second (``"100"``).

    Raises ``ConfigurationError``, one line naming the value (as ``what``) and the
    expected form.
    """
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    period = PERIODS.get((match.group(2) or "s").lower()) if match else None
    count = float(match.group(1)) if match else 0.0
    if period is None or not 0 < count < math.inf:
        raise ConfigurationError(f"{what} {text!r} is not a rate: expected {_FORM}")
    return Rate(count, period, parse_burst(burst))


def parse_optional_rate(text: str | None, *, what: str = "rate") -> Rate | None:
    """``parse_rate``, with None and the texts of ``NO_LIMIT`` (any case) as None: no limit."""
    if text is None or text.strip().lower() in NO_LIMIT:
        return None
    return parse_rate(text, what=what)


def parse_burst(value: object) -> int:
    """A ``burst`` (None: 1) as a whole number of runs from 1 to ``MAX_BURST``."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BURST:
        raise ConfigurationError(
            f"burst {value!r} is not a number of runs: expected a whole number 1-{MAX_BURST}"
        )
    return value


def limit_key(task: str, fair_key: str | None = None) -> str:
    """The broker's bucket for ``task`` (and one fair key of it, for ``rate_limit_per_key``)."""
    return task if fair_key is None else f"{task}{KEY_SEPARATOR}{fair_key}"


def claim(tat: float, now: float, interval: float, burst: int) -> tuple[float, float]:
    """One GCRA step: (seconds until the slot claimed, 0.0 for now; the new TAT)."""
    tat = max(tat, now)
    return max(tat - (burst - 1) * interval - now, 0.0), tat + interval


@dataclass(frozen=True, slots=True)
class RateSetting:
    """What the broker's table of rate limits holds for one task (``Broker.rate_limits``)."""

    rate: str | None = None
    """The limit set at run time (``"50/s"``), over the task's declared one; None: none."""
    burst: int = 1
    hold_until: float | None = None
    """Unix seconds (the broker's clock) until which the task is paused after repeated
    ``RateLimited`` raises; None: not held."""
