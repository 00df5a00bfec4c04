"""The overview's charts: throughput by outcome and failure rate over the last hour,
counted from the newest events of the event store (a bounded read) and laid out as
plain SVG shapes, which ``charts.html`` draws (no script, no chart library)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gopherq.errors import GopherQError

if TYPE_CHECKING:
    from gopherq.app import GopherQ

WINDOW = 3600.0
"""Seconds the charts cover, up to now."""
BUCKETS = 12
"""Bars per chart (5 minutes each)."""
READ_LIMIT = 10_000
"""Newest outcome events read at most; a busier hour is charted from those alone."""
OUTCOMES = ("succeeded", "failed", "retried")
"""The outcomes charted, bottom to top of a bar; each is the event ``task-<outcome>``."""

WIDTH, HEIGHT, LEFT, BOTTOM = 480, 160, 36, 18
"""The SVG's size and the margins left for the axis labels."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One rectangle of a stacked bar."""

    x: float
    y: float
    width: float
    height: float
    outcome: str
    count: int
    start: float
    """When its bucket starts (Unix seconds)."""


@dataclass(frozen=True, slots=True)
class Charts:
    """What the overview's two charts draw."""

    available: bool
    """False when events are off or cannot be read."""
    bars: tuple[Bar, ...]
    peak: int
    """The tallest bar's count: the throughput chart's scale."""
    rate_points: str
    """The failure-rate line as SVG ``points`` (buckets with no outcome left out)."""
    rates: tuple[tuple[float, float | None], ...]
    """(bucket start, failed / (succeeded + failed), None without either) per bucket."""
    totals: tuple[tuple[str, int], ...]
    truncated: bool
    """True when the read limit ended before the hour did."""
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = BOTTOM


def charts(app: GopherQ, now: float | None = None) -> Charts:
    """The last hour's outcomes, bucketed; empty charts when events are unavailable."""
    now = time.time() if now is None else now
    counts = [dict.fromkeys(OUTCOMES, 0) for _ in range(BUCKETS)]
    if not app.events.enabled:
        return _layout(counts, now, available=False, truncated=False)
    try:
        events = app.events.last(READ_LIMIT, types=[f"task-{o}" for o in OUTCOMES])
    except GopherQError:
        return _layout(counts, now, available=False, truncated=False)
    start = now - WINDOW
    size = WINDOW / BUCKETS
    for event in events:
        if start <= event.time <= now:
            bucket = min(BUCKETS - 1, int((event.time - start) // size))
            counts[bucket][event.type.removeprefix("task-")] += 1
    truncated = len(events) >= READ_LIMIT and events[0].time > start
    return _layout(counts, now, available=True, truncated=truncated)


def _layout(
    counts: list[dict[str, int]], now: float, *, available: bool, truncated: bool
) -> Charts:
    size = WINDOW / BUCKETS
    peak = max((sum(c.values()) for c in counts), default=0)
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM
    step = plot_w / BUCKETS
    bars: list[Bar] = []
    rates: list[tuple[float, float | None]] = []
    points: list[str] = []
    for i, bucket in enumerate(counts):
        begin = now - WINDOW + i * size
        y = float(plot_h)
        for outcome in OUTCOMES:
            count = bucket[outcome]
            if count and peak:
                height = plot_h * count / peak
                y -= height
                bars.append(Bar(LEFT + i * step + 1, y, step - 2, height, outcome, count, begin))
        done = bucket["succeeded"] + bucket["failed"]
        rate = bucket["failed"] / done if done else None
        rates.append((begin, rate))
        if rate is not None:
            points.append(f"{LEFT + (i + 0.5) * step:.1f},{plot_h * (1 - rate):.1f}")
    totals = tuple((o, sum(c[o] for c in counts)) for o in OUTCOMES)
    return Charts(available, tuple(bars), peak, " ".join(points), tuple(rates), totals, truncated)
