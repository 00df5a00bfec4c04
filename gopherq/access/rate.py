"""Send rates of API keys (``100/s``) and the token bucket that enforces them."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_PERIODS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*([a-z]+))?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``amount`` jobs per ``period`` seconds; a client may send ``amount`` at once."""

    amount: int
    period: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"100/s"``, ``"6000/m"``, ``"50/h"``, ``"1000/d"`` or ``"100"`` (per second);
        ``ValueError`` saying the form otherwise."""
        match = _RATE.match(text.lower())
        period = _PERIODS.get(match.group(2) or "s") if match else None
        if match is None or period is None or int(match.group(1)) < 1:
            raise ValueError(f"bad rate {text!r}: use a count per s, m, h or d, such as 100/s")
        return cls(int(match.group(1)), period)

    @property
    def per_second(self) -> float:
        """Jobs per second, on average."""
        return self.amount / self.period

    def __str__(self) -> str:
        unit = next(u for u, seconds in _PERIODS.items() if seconds == self.period)
        return f"{self.amount}/{unit}"


def parse_rate(text: str | None) -> Rate | None:
    """``Rate.parse``, with None, ``""``, ``"none"`` and ``"off"`` meaning no limit."""
    if text is None or text.strip().lower() in ("", "none", "off"):
        return None
    return Rate.parse(text)


class TokenBuckets:
    """One token bucket per name (an API key), each holding up to its rate's ``amount``.

    A take of ``count`` tokens passes when the bucket holds ``count`` (or is full, so
    that a batch larger than the bucket passes once and leaves it in debt); otherwise
    it is refused with the seconds until it would pass. Thread-safe: the API's
    routes run in a thread pool.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float, Rate]] = {}  # name -> tokens, when, rate

    def take(self, name: str, rate: Rate, count: int = 1) -> float:
        """Take ``count`` tokens from ``name``'s bucket: 0.0 if taken, else the seconds
        to wait before this take would pass (nothing is taken then)."""
        with self._lock:
            now = self.clock()
            tokens, then, was = self._buckets.get(name, (float(rate.amount), now, rate))
            if was != rate:  # the key's rate changed: start full at the new rate
                tokens = float(rate.amount)
            tokens = min(float(rate.amount), tokens + (now - then) * rate.per_second)
            needed = min(float(count), float(rate.amount))
            if tokens + 1e-9 >= needed:
                self._buckets[name] = (tokens - count, now, rate)
                return 0.0
            self._buckets[name] = (tokens, now, rate)
            return (needed - tokens) / rate.per_second
