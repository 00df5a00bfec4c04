"""Queue weights and strict order: which queue a worker process asks first.

``gopherq worker -Q high:3,default:2,low:1`` takes tasks 3:2:1 while every queue
has work; a queue with none gives its share to the others. Each worker process
keeps a ``WeightedQueues`` of its own, and each reserve lists its queues least
served first, in a strict-order reserve (``ReserveOrder(strict=True)``): the
first queue's ready work, and only when it runs short, the next one's. So a
weight costs no extra call to the broker, and the blocking wait stays on all
the queues at once.

Stride scheduling, counted in tasks: serving a task of a queue moves its pass
on by 1 / weight, and the queue with the lowest pass comes first. The count is
by tasks, not by reserve calls, because a batch holds 1 to ``prefetch`` tasks
(and some from the next queues when the first runs short). A queue that the
broker passed over had no ready work (or was paused): its pass moves up to the
pass the served queues had, so that it does not save up a share while idle and
then take a burst when work comes back.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from gopherq.brokers.base import Broker, Delivery, ReserveOrder
from gopherq.errors import ConfigurationError
from gopherq.settings import Settings, aging_periods

Reserve = Callable[[int, float], list[Delivery]]
"""A worker process's reserve: (limit, timeout) -> deliveries."""

QUEUE_FORM = "NAME or NAME:WEIGHT with a whole number WEIGHT from 1 up (-Q high:3,low:1)"
"""The form of a queue in ``-Q``, quoted by errors."""


def parse_queues(items: Sequence[str]) -> dict[str, int | None]:
    """``-Q`` items (``high:3``, ``low``) as queue -> weight (None where not given).

    ``ConfigurationError`` names a bad item and the expected form. A queue listed
    twice keeps its first place; it must not get two different weights.
    """
    queues: dict[str, int | None] = {}
    for item in items:
        text = item.strip()
        if not text:
            continue
        name, colon, raw = text.rpartition(":") if ":" in text else (text, "", "")
        name = name.strip()
        if not name or (colon and not re.fullmatch(r"0*[1-9][0-9]*", raw.strip())):
            raise ConfigurationError(f"queue {text!r}: expected {QUEUE_FORM}")
        weight = int(raw) if colon else None
        known = queues.get(name)
        if known is not None and weight is not None and weight != known:
            raise ConfigurationError(f"queue {name!r} has two weights, {known} and {weight}")
        queues[name] = known or weight
    return queues


def split_weights(
    queues: Sequence[str] | Mapping[str, int | None],
) -> tuple[list[str], dict[str, int] | None]:
    """The queue names, and their weights when any is given (1 for the others)."""
    if not isinstance(queues, Mapping) or all(w is None for w in queues.values()):
        return list(queues), None
    return list(queues), check_weights({q: 1 if w is None else w for q, w in queues.items()})


def reserver(
    broker: Broker,
    settings: Settings,
    queues: Sequence[str],
    weights: Mapping[str, int] | None = None,
    *,
    strict: bool = False,
) -> Reserve:
    """The reserve of a worker process on ``queues``: plain ``Broker.reserve`` unless
    the queues have ``weights`` (then strict order, least served first), ``strict``
    order or priority aging (``settings.priority_aging``)."""
    check_order(weights, strict)
    names = list(queues)
    aging = aging_periods(settings.priority_aging, names)
    if not (weights or strict or aging):
        return functools.partial(broker.reserve, names)
    order = ReserveOrder(strict=bool(weights or strict), aging=aging)
    if not weights:
        return lambda limit, timeout: broker.reserve_ordered(names, limit, timeout, order)
    weighted = WeightedQueues({queue: weights.get(queue, 1) for queue in names})

    def reserve(limit: int, timeout: float) -> list[Delivery]:
        listed = weighted.order()
        batch = broker.reserve_ordered(listed, limit, timeout, order)
        weighted.served(listed, batch, limit)
        return batch

    return reserve


def labels(queues: Sequence[str], weights: Mapping[str, int] | None, strict: bool) -> list[str]:
    """The queues as the banner shows them: ``high:3``; ``(strict order)`` after the last."""
    shown = [f"{q}:{weights[q]}" if weights else q for q in queues]
    if strict and shown:
        shown[-1] += " (strict order)"
    return shown


def check_order(weights: Mapping[str, int] | None, strict: bool) -> None:
    """``ConfigurationError`` for weights with strict order, which ignores them."""
    if weights and strict:
        shown = ",".join(f"{q}:{w}" for q, w in weights.items())
        raise ConfigurationError(
            f"-Q {shown} with --strict: strict order takes the queues in listed order, "
            "give no weights"
        )


def aging_unsupported(broker: Broker, settings: Settings, queues: Sequence[str]) -> str | None:
    """Why ``broker`` cannot serve the priority aging ``settings`` give ``queues``; None
    when it can (or none ages)."""
    if not aging_periods(settings.priority_aging, queues):
        return None
    if type(broker).reserve_ordered is not Broker.reserve_ordered:
        return None
    return f"{type(broker).__name__} does not support priority aging (setting priority_aging)"


def check_weights(weights: Mapping[str, int]) -> dict[str, int]:
    """``weights`` as a dict; ``ConfigurationError`` for one that is not a whole
    number from 1 up."""
    for queue, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ConfigurationError(
                f"queue {queue!r} has weight {weight!r}: expected a whole number from 1 up"
            )
    return dict(weights)


class WeightedQueues:
    """One worker process's share keeping over weighted queues (see the module docstring).

    ``order()`` lists the queues for the next reserve; ``served()`` counts what that
    reserve took.
    """

    def __init__(self, weights: Mapping[str, int]) -> None:
        self._weights = check_weights(weights)
        self._queues = list(self._weights)
        self._pass = dict.fromkeys(self._queues, 0.0)

    def order(self) -> list[str]:
        """The queues, least served for their weight first (ties: in listed order)."""
        return sorted(self._queues, key=self._pass.__getitem__)

    def served(self, order: Sequence[str], batch: Sequence[Delivery], limit: int) -> None:
        """Count ``batch``, which a strict-order reserve of up to ``limit`` from the
        queues in ``order`` took."""
        if not batch:
            return  # nothing learnt: every queue may just have been empty
        taken = Counter(delivery.queue for delivery in batch)
        start = min(self._pass[queue] for queue in taken)
        # The broker went past a queue that gave nothing before the last one that gave;
        # and past every one when the batch came short.
        last = len(order) if len(batch) < limit else max(order.index(q) for q in taken)
        for queue in order[:last]:
            if queue not in taken:
                self._pass[queue] = max(self._pass[queue], start)
        for queue, count in taken.items():
            self._pass[queue] += count / self._weights[queue]
