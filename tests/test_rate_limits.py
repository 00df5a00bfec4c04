"""Rate limits in-process: parsing, declaration, admission and ``RateLimited`` on the
memory broker, with consumers in threads. No timing assertions: what is checked is
where messages are and what the broker was asked."""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_consumer import consuming

from gopherq import GopherQ, RateLimited, State
from gopherq.brokers import Delivery, Envelope
from gopherq.brokers.memory import MemoryBroker
from gopherq.errors import ConfigurationError, NotRegistered
from gopherq.limits import Rate, limit_key, parse_optional_rate, parse_rate
from gopherq.message import Message, new_id
from gopherq.worker.rates import RATE_LIMITED_IN_A_ROW, RateAdmission

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("t", broker="memory://")


class Counting(MemoryBroker):
    """A memory broker that counts the calls of the rate-limit operations."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def rate_admit(self, key: str, interval: float, burst: int, deliveries: Any) -> list[float]:
        self._count("rate_admit")
        return super().rate_admit(key, interval, burst, deliveries)

    def rate_keep(self, key: str, deliveries: Any) -> int:
        self._count("rate_keep")
        return super().rate_keep(key, deliveries)

    def defer(self, deliveries: Any, countdowns: Any) -> int:
        self._count("defer")
        return super().defer(deliveries, countdowns)

    def rate_limits(self) -> Any:
        self._count("rate_limits")
        return super().rate_limits()


# Parsing and declaring.


@pytest.mark.parametrize(
    ("text", "burst", "interval"),
    [
        ("100/s", None, 0.01),
        ("30/m", 5, 2.0),
        (" 2 / h ", 1, 1800.0),
        ("0.5/s", None, 2.0),
        ("10/d", None, 8640.0),
        ("100", None, 0.01),
        ("20/sec", None, 0.05),
        ("2/MIN", None, 30.0),
    ],
)
def test_rates_parse(text: str, burst: int | None, interval: float) -> None:
    rate = parse_rate(text, burst)
    assert rate.interval == pytest.approx(interval)
    assert rate.burst == (burst or 1)


@pytest.mark.parametrize(
    "text", ["fast", "0/s", "10/w", "10/", "-1/s", "", "none", 100, None, "1e3/s"]
)
def test_a_bad_rate_is_one_line_naming_it(text: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_rate(text)
    message = str(caught.value)
    assert repr(text) in message and "'100/s'" in message and "\n" not in message


def test_one_grammar_for_every_rate() -> None:
    for text in ("100/s", "100/sec", "100", "6000/M", "6000/min", "50/h", "1000/d"):
        assert parse_rate(text) == parse_rate(str(parse_rate(text)))
    assert str(parse_rate("100/sec")) == "100/s" and str(parse_rate("5/min")) == "5/m"
    for off in (None, "", "none", "OFF", " none "):
        assert parse_optional_rate(off) is None
    assert parse_optional_rate("2/d") == Rate(2, 86400.0)
    with pytest.raises(ConfigurationError, match="setting x 'fast' is not a rate"):
        parse_optional_rate("fast", what="setting x")


def test_task_options_take_rates_at_declaration(app: GopherQ) -> None:
    @app.task(rate_limit="100/s", burst=5, rate_limit_per_key="10/m")
    def send() -> None: ...

    assert send.options.rate_limit == Rate(100, 1.0, 5)
    assert send.options.rate_limit_per_key == Rate(10, 60.0, 5)
    assert str(send.options.rate_limit) == "100/s"
    with pytest.raises(ConfigurationError, match="task option rate_limit 'fast' is not a rate"):
        app.task(rate_limit="fast")(lambda: None)
    with pytest.raises(ConfigurationError, match="burst 0 is not a number of runs"):
        app.task(rate_limit="1/s", burst=0)(lambda: None)


def test_fair_key_travels_in_the_envelope() -> None:
    message = Message(id="1", task="t", fair_key="tenant-42")
    data = message.to_map()
    assert data["fair"] == "tenant-42"
    assert Message.from_map(data).fair_key == "tenant-42"
    assert "fair" not in Message(id="1", task="t").to_map()


def test_rate_limited_takes_a_number_of_seconds() -> None:
    assert RateLimited(2).retry_after == 2.0
    with pytest.raises(ValueError, match="retry_after"):
        RateLimited(float("nan"))
    with pytest.raises(TypeError, match="retry_after"):
        RateLimited("soon")  # type: ignore[arg-type]


# Admission.


def reserved(app: GopherQ, count: int) -> list[Delivery]:
    return app.broker.reserve(["default"], count, 0)


def test_unlimited_tasks_cost_no_call() -> None:
    broker = Counting()
    app = GopherQ("t", broker=broker)

    @app.task
    def free() -> None: ...

    admission = RateAdmission(app, broker, "w")
    assert not admission.active
    assert broker.calls == {"rate_limits": 1}
    assert not admission.active  # the table is read at most once a second
    assert broker.calls == {"rate_limits": 1}


def test_over_the_limit_waits_in_the_broker_without_counting() -> None:
    broker = Counting()
    app = GopherQ("t", broker=broker)

    @app.task(rate_limit="1/h")
    def limited() -> None: ...

    @app.task
    def free() -> None: ...

    first, second, other = limited.delay(), limited.delay(), free.delay()
    admission = RateAdmission(app, broker, "w")
    assert admission.active
    run, messages = admission.admit(reserved(app, 3))
    assert [d.id for d in run] == [first.id, other.id]
    assert set(messages) == {first.id, second.id, other.id}
    assert broker.calls == {"rate_limits": 1, "rate_admit": 1, "defer": 1}
    assert broker.locate(second.id) is State.SCHEDULED
    [peeked] = [broker.peek(second.id)]
    assert peeked is not None and peeked.attempt == 0


def test_per_key_buckets_then_the_task_bucket() -> None:
    broker = Counting()
    app = GopherQ("t", broker=broker)

    @app.task(rate_limit_per_key="1/h")
    def per_tenant() -> None: ...

    a1, a2 = _send(app, per_tenant.name, "a"), _send(app, per_tenant.name, "a")
    b1 = _send(app, per_tenant.name, "b")
    run, _ = RateAdmission(app, broker, "w").admit(reserved(app, 3))
    assert [d.id for d in run] == [a1.id, b1.id]
    assert broker.locate(a2.id) is State.SCHEDULED
    assert broker.calls["rate_admit"] == 2  # one per bucket: a, b


def test_a_message_the_task_bucket_holds_keeps_its_key_slot() -> None:
    broker = Counting()
    app = GopherQ("t", broker=broker)

    @app.task(rate_limit="1/h", rate_limit_per_key="1/h")
    def per_tenant() -> None: ...

    a1, b1 = _send(app, per_tenant.name, "a"), _send(app, per_tenant.name, "b")
    run, _ = RateAdmission(app, broker, "w").admit(reserved(app, 2))
    assert [d.id for d in run] == [a1.id]  # b1: its tenant's slot, then the task's waits
    assert broker.calls == {"rate_admit": 3, "rate_keep": 1, "defer": 1}
    # b1 keeps its slot of tenant b: a second message of b waits for the next one...
    tenant_b = limit_key(per_tenant.name, "b")
    _send(app, per_tenant.name, "b")
    [wait] = broker.rate_admit(tenant_b, 3600.0, 1, reserved(app, 1))
    assert wait > 3000
    # ... and b1, back (here: the task's bucket reset), pays tenant b no second slot.
    assert broker.rate_release(limit_key(per_tenant.name)) == 1
    [back] = reserved(app, 1)
    assert back.id == b1.id
    assert broker.rate_admit(tenant_b, 3600.0, 1, [back]) == [0.0]


def test_a_broker_without_rate_keep_still_limits(caplog: pytest.LogCaptureFixture) -> None:
    class NoKeep(MemoryBroker):
        def rate_keep(self, *args: Any) -> int:
            raise self.not_supported("rate_keep")

    broker = NoKeep()
    app = GopherQ("t", broker=broker)

    @app.task(rate_limit="1/h", rate_limit_per_key="1/h")
    def per_tenant() -> None: ...

    a1, b1 = _send(app, per_tenant.name, "a"), _send(app, per_tenant.name, "b")
    run, _ = RateAdmission(app, broker, "w").admit(reserved(app, 2))
    assert [d.id for d in run] == [a1.id]
    assert broker.locate(b1.id) is State.SCHEDULED
    assert "pays its key again" in caplog.text


def _send(app: GopherQ, task: str, fair_key: str) -> Message:
    """Enqueue a message of ``task`` with ``fair_key`` (the envelope field; the send
    option is fair sharing's)."""
    message = Message(id=new_id(), task=task, fair_key=fair_key)
    app.broker.enqueue([Envelope(message.id, "default", 2, app.codec.encode(message))])
    return message


def test_a_rate_set_at_run_time_wins_and_a_hold_waits(app: GopherQ) -> None:
    @app.task(rate_limit="1000/s", burst=1000)
    def limited() -> None: ...

    app.broker.set_rate_limit(limited.name, "1/h")
    first, second = limited.delay(), limited.delay()
    admission = RateAdmission(app, app.broker, "w")
    assert admission.active  # reads the table
    run, _ = admission.admit(reserved(app, 2))
    assert [d.id for d in run] == [first.id]
    assert app.broker.locate(second.id) is State.SCHEDULED

    app.broker.hold_rate("test_rate_limits.held", 3600)

    @app.task(name="test_rate_limits.held")
    def held() -> None: ...

    third = held.delay()
    admission = RateAdmission(app, app.broker, "w")
    assert admission.active
    assert admission.admit(reserved(app, 1))[0] == []
    assert app.broker.locate(third.id) is State.SCHEDULED


def test_a_broker_without_rate_limits_runs_everything(caplog: pytest.LogCaptureFixture) -> None:
    class Plain(MemoryBroker):
        def rate_admit(self, *args: Any) -> list[float]:
            raise self.not_supported("rate_admit")

        def rate_limits(self) -> Any:
            raise self.not_supported("rate_limits")

    broker = Plain()
    app = GopherQ("t", broker=broker)

    @app.task(rate_limit="1/h")
    def limited() -> None: ...

    limited.delay()
    limited.delay()
    admission = RateAdmission(app, broker, "w")
    assert admission.active
    assert len(admission.admit(reserved(app, 2))[0]) == 2
    assert "rate limits are not enforced" in caplog.text
    assert not admission.active


# RateLimited, end to end in a thread.


def test_rate_limited_reschedules_without_a_retry(app: GopherQ) -> None:
    calls: list[int] = []

    @app.task(retries=0)
    def partner() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RateLimited(retry_after=0.2)
        return "done"

    with consuming(app):
        result = partner.delay()
        assert result.get(timeout=10) == "done"
    assert len(calls) == 2
    record = app.backend.get(result.id)
    assert record is not None and record.attempts == 1


def test_rate_limited_in_a_row_holds_the_task(app: GopherQ) -> None:
    @app.task
    def partner() -> None:
        raise RateLimited(retry_after=3600)

    with consuming(app):
        results = [partner.delay() for _ in range(RATE_LIMITED_IN_A_ROW)]
        _wait(lambda: app.broker.rate_limits().get(partner.name) is not None)
    setting = app.broker.rate_limits()[partner.name]
    assert setting.rate is None and setting.hold_until is not None
    assert [app.broker.locate(r.id) for r in results] == [State.SCHEDULED] * len(results)


def test_run_time_limits_from_the_app(app: GopherQ, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gopherq.admin_rates.RELEASE_AFTER", 0.0)

    @app.task(rate_limit="10/s")
    def limited() -> None: ...

    assert app.rate_limits.set(limited.name, "50/m", burst=2) == Rate(50, 60.0, 2)
    [info] = app.rate_limits.list()
    assert (info.task, info.rate, info.burst, info.source) == (limited.name, "50/m", 2, "set")
    assert info.declared == "10/s"
    with pytest.raises(NotRegistered):
        app.rate_limits.set("nope", "1/s")
    with pytest.raises(ConfigurationError):
        app.rate_limits.set(limited.name, "fast")
    assert app.broker.rate_limits()[limited.name].rate == "50/m"  # unchanged
    app.rate_limits.clear(limited.name)
    [info] = app.rate_limits.list()
    assert (info.rate, info.source) == ("10/s", "declared")


def test_set_releases_messages_waiting_for_the_old_rate(
    app: GopherQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gopherq.admin_rates.RELEASE_AFTER", 0.0)

    @app.task(rate_limit="1/h")
    def limited() -> None: ...

    limited.delay()
    waiting = limited.delay()
    RateAdmission(app, app.broker, "w").admit(reserved(app, 2))
    assert app.broker.locate(waiting.id) is State.SCHEDULED
    app.rate_limits.set(limited.name, "100/s")
    assert app.broker.locate(waiting.id) is State.QUEUED
    assert limit_key(limited.name) == limited.name


def _wait(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)
