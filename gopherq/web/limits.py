"""Per-key send rates: ``enforce_send_rate`` for the routes that send jobs.

Each key has a token bucket in the serving process (``ServerState.buckets``),
holding up to its rate's count and refilled at its rate: the key's own
(``gopherq keys create --rate``), else the server's (setting ``api_rate``).
Several ``serve`` processes each keep their own buckets.
"""

from __future__ import annotations

import math

from fastapi import Request

from gopherq.web.auth import Caller
from gopherq.web.problems import Problem
from gopherq.web.state import server_state


def enforce_send_rate(request: Request, caller: Caller, count: int = 1) -> None:
    """Take ``count`` jobs from ``caller``'s send rate, or raise 429 (``rate-limited``)
    with ``Retry-After``, sending nothing. Call it in a sending route once the body is
    read and before anything reaches the broker: ``count`` is the number of jobs."""
    if caller.rate is None or count <= 0:
        return
    wait = server_state(request).buckets.take(caller.name, caller.rate, count)
    if wait > 0:
        raise Problem(
            429,
            "rate-limited",
            "Too many requests",
            f"the key {caller.name!r} may send {caller.rate} jobs; "
            f"{count} more can be sent in {wait:.2f}s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
