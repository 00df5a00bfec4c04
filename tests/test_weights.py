"""Queue weights, strict order and the setting priority_aging in a worker process
(``gopherq.worker.weights``), on the memory broker: parsing ``-Q``, the shares, the
setting, and what ``reserver`` asks a broker."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from gopherq import GopherQ
from gopherq.brokers import Broker, Delivery, Envelope, ReserveOrder
from gopherq.brokers.memory import MemoryBroker
from gopherq.errors import ConfigurationError
from gopherq.settings import Settings
from gopherq.worker.weights import (
    WeightedQueues,
    aging_unsupported,
    parse_queues,
    reserver,
    split_weights,
)

WEIGHTS = {"high": 3, "default": 2, "low": 1}


def fill(broker: Broker, counts: dict[str, int]) -> None:
    broker.enqueue(
        [
            Envelope(uuid.uuid4().hex, queue, 2, b"")
            for queue, count in counts.items()
            for _ in range(count)
        ]
    )


def drain(reserve: Any, tasks: int, limits: list[int]) -> Counter[str]:
    """Reserve ``tasks`` tasks, batch limits cycling through ``limits``; the count per queue."""
    taken: Counter[str] = Counter()
    n = 0
    while sum(taken.values()) < tasks:
        batch = reserve(limits[n % len(limits)], 0.0)
        assert batch, "ran dry"
        taken.update(d.queue for d in batch)
        n += 1
    return taken


def test_parse_queues() -> None:
    assert parse_queues(["high:3", " default:2 ", "low"]) == {"high": 3, "default": 2, "low": None}
    assert parse_queues(["a", "", "b", "a"]) == {"a": None, "b": None}
    assert parse_queues(["a", "a:2"]) == {"a": 2}  # the first place, the weight given


@pytest.mark.parametrize("item", ["high:0", "high:x", "high:-1", "high:", ":2", "h:2.5", "h: "])
def test_parse_queues_names_a_bad_item_and_the_form(item: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^queue {item.strip()!r}: expected NAME or"):
        parse_queues(["ok", item])


def test_two_weights_for_one_queue() -> None:
    with pytest.raises(ConfigurationError, match="'a' has two weights, 2 and 3"):
        parse_queues(["a:2", "a:3"])


def test_split_weights() -> None:
    assert split_weights(["a", "b"]) == (["a", "b"], None)
    assert split_weights({"a": None, "b": None}) == (["a", "b"], None)
    assert split_weights({"a": 2, "b": None}) == (["a", "b"], {"a": 2, "b": 1})
    with pytest.raises(ConfigurationError, match="queue 'a' has weight 0"):
        split_weights({"a": 0})


def test_weights_with_strict_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="-Q a:2,b:1 with --strict"):
        reserver(MemoryBroker(), Settings(), ["a", "b"], {"a": 2, "b": 1}, strict=True)


@pytest.mark.parametrize("limits", [[16], [1], [1, 16, 5, 3]])
def test_shares_follow_the_weights_in_tasks(limits: list[int]) -> None:
    broker = MemoryBroker()
    fill(broker, {"high": 3000, "default": 3000, "low": 3000})
    taken = drain(reserver(broker, Settings(), list(WEIGHTS), WEIGHTS), 6000, limits)
    for queue, weight in WEIGHTS.items():
        assert abs(taken[queue] - 1000 * weight) <= 16, taken  # one batch at most


def test_an_empty_queue_gives_its_share_to_the_others() -> None:
    broker = MemoryBroker()
    fill(broker, {"high": 3000, "low": 3000})
    taken = drain(reserver(broker, Settings(), list(WEIGHTS), WEIGHTS), 4000, [16])
    assert abs(taken["high"] - 3000) <= 16 and taken["default"] == 0, taken


def test_a_queue_back_from_idle_gets_its_share_not_a_burst() -> None:
    broker = MemoryBroker()
    reserve = reserver(broker, Settings(), list(WEIGHTS), WEIGHTS)
    fill(broker, {"high": 5000, "default": 5000})
    drain(reserve, 3000, [16])  # low has none meanwhile
    fill(broker, {"low": 5000})
    taken = drain(reserve, 600, [1])
    assert 80 <= taken["low"] <= 120, taken  # its sixth from now on


def test_a_paused_queue_gives_its_share_and_gets_it_back_on_resume() -> None:
    broker = MemoryBroker()
    reserve = reserver(broker, Settings(), list(WEIGHTS), WEIGHTS)
    fill(broker, {"high": 5000, "default": 5000, "low": 5000})
    broker.pause("high")
    taken = drain(reserve, 1200, [4])
    assert taken["high"] == 0 and abs(taken["default"] - 800) <= 8, taken
    broker.resume("high")
    taken = drain(reserve, 1200, [4])
    assert abs(taken["high"] - 600) <= 12, taken


def test_order_lists_the_least_served_first() -> None:
    weighted = WeightedQueues({"a": 2, "b": 1})
    assert weighted.order() == ["a", "b"]
    batch = [Delivery(str(n), "a", 2, b"", 0, 1, "t") for n in range(4)]
    weighted.served(["a", "b"], batch, 4)  # a: pass 2
    assert weighted.order() == ["b", "a"]


class Recording(MemoryBroker):
    """A memory broker that records which reserve a worker called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[str], ReserveOrder | None]] = []

    def reserve(self, queues: Any, limit: int, timeout: float) -> list[Delivery]:
        self.calls.append(("reserve", list(queues), None))
        return super().reserve(queues, limit, timeout)

    def reserve_ordered(
        self, queues: Any, limit: int, timeout: float, order: ReserveOrder
    ) -> list[Delivery]:
        self.calls.append(("reserve_ordered", list(queues), order))
        return super().reserve_ordered(queues, limit, timeout, order)


def test_plain_queues_call_plain_reserve() -> None:
    broker = Recording()
    reserver(broker, Settings(), ["a", "b"])(5, 0.0)
    assert broker.calls == [("reserve", ["a", "b"], None)]


def test_strict_and_aging_call_reserve_ordered_with_the_queues_aging() -> None:
    broker = Recording()
    settings = Settings(priority_aging={"b": 30, "other": 5})
    reserver(broker, settings, ["a", "b"], strict=True)(5, 0.0)
    assert broker.calls == [("reserve_ordered", ["a", "b"], ReserveOrder(True, {"b": 30.0}))]
    broker.calls.clear()
    reserver(broker, Settings(priority_aging=10), ["a", "b"])(5, 0.0)
    assert broker.calls == [
        ("reserve_ordered", ["a", "b"], ReserveOrder(False, {"a": 10, "b": 10}))
    ]


def test_aging_on_a_broker_without_it_is_named_before_start() -> None:
    from minimal_broker import DictBroker

    settings = Settings(priority_aging={"bulk": 60})
    assert aging_unsupported(DictBroker(), settings, ["default"]) is None
    assert aging_unsupported(MemoryBroker(), settings, ["bulk"]) is None
    assert aging_unsupported(DictBroker(), settings, ["bulk"]) == (
        "DictBroker does not support priority aging (setting priority_aging)"
    )


def test_a_consumer_takes_its_queues_by_weight() -> None:
    app = GopherQ("weights", broker="memory://", result_backend="memory://", events=False)
    seen: list[str] = []

    @app.task
    def note(queue: str) -> None:
        seen.append(queue)

    for queue in WEIGHTS:
        for _ in range(300):
            note.apply_async((queue,), queue=queue)
    from gopherq.worker import Consumer

    consumer = Consumer(app, list(WEIGHTS), weights=WEIGHTS, burst=True, reserve_timeout=0.0)
    consumer.run()
    first = Counter(seen[:600])
    assert [first[q] for q in WEIGHTS] == pytest.approx([300, 200, 100], abs=16)


def test_priority_aging_setting_from_code_and_environment() -> None:
    assert Settings.load({"priority_aging": 60}).priority_aging == 60
    assert Settings.load({"priority_aging": {"bulk": 0.5}}).priority_aging == {"bulk": 0.5}
    env = {"GOPHERQ_PRIORITY_AGING": "30"}
    assert Settings.load({}, env).priority_aging == 30.0
    env = {"GOPHERQ_PRIORITY_AGING": '{"bulk": 5}'}
    assert Settings.load({}, env).priority_aging == {"bulk": 5}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, "setting 'priority_aging' is 0, not a number of seconds above 0"),
        (-1.5, "setting 'priority_aging' is -1.5, not a number of seconds above 0"),
        (float("inf"), "setting 'priority_aging' is inf, not a number of seconds above 0"),
        ({"bulk": 0}, "setting 'priority_aging': queue 'bulk' has 0, not a number of seconds"),
        ({"bulk": "1m"}, "setting 'priority_aging': queue 'bulk' has '1m', not a number"),
        ("60", "setting 'priority_aging' must be float or Mapping or None, not str"),
        (True, "setting 'priority_aging' must be float or Mapping or None, not bool"),
    ],
)
def test_a_bad_priority_aging_is_one_line_naming_it(value: object, error: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.load({"priority_aging": value})
    assert str(raised.value).startswith(error)
    assert "\n" not in str(raised.value)


def test_a_bad_priority_aging_in_the_environment() -> None:
    with pytest.raises(ConfigurationError, match="GOPHERQ_PRIORITY_AGING='fast' is not a valid"):
        Settings.load({}, {"GOPHERQ_PRIORITY_AGING": "fast"})
    with pytest.raises(ConfigurationError, match="queue 'bulk' has -1"):
        Settings.load({}, {"GOPHERQ_PRIORITY_AGING": '{"bulk": -1}'})
