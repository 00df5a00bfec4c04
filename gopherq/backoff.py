"""Pauses between attempts while a broker or a store fails, shared by the worker's parts."""

from __future__ import annotations

FIRST_BACKOFF = 0.1
"""Seconds of the first pause after a failure."""
MAX_BACKOFF = 5.0
"""Longest pause between attempts while the broker or a store fails."""


def next_backoff(previous: float) -> float:
    """The pause after one more failure: ``FIRST_BACKOFF`` doubling up to ``MAX_BACKOFF``
    (``previous`` is 0 after a success)."""
    return min(max(previous * 2, FIRST_BACKOFF), MAX_BACKOFF)
