"""Send rates of API keys (``100/s``) and the token bucket that enforces them.

A send rate is a ``gopherq.limits.Rate`` in the grammar of every rate of gopherq
(``gopherq.limits.parse_rate``); a key's bucket holds up to the rate's ``count``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gopherq.errors import ConfigurationError
from gopherq.limits import Rate, parse_optional_rate

__all__ = ["Rate", "TokenBuckets", "parse_rate"]


def parse_rate(text: str | None) -> Rate | None:
    """A send rate (``"100/s"``, ``"6000/m"``, ``"50/h"``, ``"1000/d"``, ``"100"``: per
    second), with None, ``""``, ``"none"`` and ``"off"`` meaning no limit.

    Raises ``ValueError`` naming the value and the expected form.
    """
    try:
        return parse_optional_rate(text, what="send rate")
    except ConfigurationError as exc:  # a bad argument, as the other fields of a key
        raise ValueError(str(exc)) from None


class TokenBuckets:
    """One token bucket per name (an API key), each holding up to its rate's ``count``.

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
            tokens, then, was = self._buckets.get(name, (rate.count, now, rate))
            if was != rate:  # the key's rate changed: start full at the new rate
                tokens = rate.count
            tokens = min(rate.count, tokens + (now - then) * rate.per_second)
            needed = min(float(count), rate.count)
            if tokens + 1e-9 >= needed:
                self._buckets[name] = (tokens - count, now, rate)
                return 0.0
            self._buckets[name] = (tokens, now, rate)
            return (needed - tokens) / rate.per_second
