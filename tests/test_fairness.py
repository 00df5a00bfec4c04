"""Fair keys at the sending end: the ``fair_key`` task option and send option, the
envelope field, and turns on the memory broker. The brokers' side: the contract
suite (tests/test_broker_contract.py); with real workers: tests/e2e/test_fairness_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest

from gopherq import GopherQ, TaskContext
from gopherq.errors import ConfigurationError, DecodeError
from gopherq.message import Message


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("fair", broker="memory://")


def fair_key_of(app: GopherQ, signature: Any) -> str | None:
    """The key a send of ``signature`` carries, in the envelope and in its body."""
    envelope = app.envelope(signature)
    assert app.codec.decode(envelope.body).fair_key == envelope.fair_key
    return envelope.fair_key


def test_the_option_names_a_parameter(app: GopherQ) -> None:
    @app.task(fair_key="tenant")
    def work(job: int, tenant: str | int | None = None, *, extra: int = 0) -> None: ...

    assert fair_key_of(app, work.s(1, "t-1")) == "t-1"
    assert fair_key_of(app, work.s(1, tenant="t-2")) == "t-2"
    assert fair_key_of(app, work.s(1, 42)) == "42"  # an integer id is its text
    assert fair_key_of(app, work.s(1)) is None  # None: no key


def test_the_option_may_name_a_keyword_only_parameter_of_a_bound_task(app: GopherQ) -> None:
    @app.task(bind=True, fair_key="tenant")
    def work(ctx: TaskContext, job: int, *, tenant: str) -> None: ...

    assert fair_key_of(app, work.s(1, tenant="t")) == "t"


def test_the_option_may_be_a_function_of_the_arguments(app: GopherQ) -> None:
    @app.task(fair_key=lambda order, **_: order["customer"])
    def ship(order: dict[str, Any], rush: bool = False) -> None: ...

    assert fair_key_of(app, ship.s({"customer": "c-7"}, rush=True)) == "c-7"


def test_the_send_option_wins_over_the_tasks_and_none_clears_it(app: GopherQ) -> None:
    @app.task(fair_key="tenant")
    def work(tenant: str) -> None: ...

    @app.task
    def plain() -> None: ...

    assert fair_key_of(app, work.s("t").set(fair_key="other")) == "other"
    assert fair_key_of(app, work.s("t").set(fair_key=None)) is None
    assert fair_key_of(app, plain.s().set(fair_key="x")) == "x"
    assert fair_key_of(app, plain.s()) is None
    assert plain.fair_key_of is None  # nothing to do on a send without the option


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("tenant", "fair_key names 'tenant', which is not one of its parameters (job, rest)"),
        ("args", "fair_key names 'args', which is not one of its parameters"),
        (3, "fair_key takes the name of a parameter or a function of the task's arguments, not 3"),
    ],
)
def test_a_bad_option_fails_at_declaration(app: GopherQ, option: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):

        @app.task(fair_key=option)
        def work(job: int, rest: int, *args: int) -> None: ...


@pytest.mark.parametrize(
    ("value", "shown"),
    [("", "''"), ("x" * 201, "'xxxx"), (42, "42"), (b"t", "b't'"), (["t"], "['t']")],
)
def test_a_bad_send_option_is_one_line_naming_it(app: GopherQ, value: Any, shown: str) -> None:
    @app.task
    def work() -> None: ...

    with pytest.raises(ValueError) as caught:
        work.apply_async(fair_key=value)
    text = str(caught.value)
    assert text.startswith("send option fair_key must be a string of 1-200 characters, not ")
    assert shown in text and "\n" not in text
    assert app.broker.stats() == {}  # nothing sent


def test_a_bad_derived_key_names_the_task_and_the_argument(app: GopherQ) -> None:
    @app.task(fair_key="tenant")
    def work(tenant: Any) -> None: ...

    @app.task(fair_key=lambda tenant: tenant)
    def other(tenant: Any) -> None: ...

    with pytest.raises(ValueError, match=r"fair_key argument 'tenant' must be .* integer, not 1.5"):
        work.delay(1.5)
    with pytest.raises(ValueError, match=r"what its fair_key function .* returns must be"):
        other.delay("")
    assert app.broker.stats() == {}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "envelope field 'fair' is empty"),
        ("x" * 201, "envelope field 'fair' is 201 characters long, above the limit of 200"),
        (7, "envelope field 'fair' has type int"),
    ],
)
def test_the_envelope_field_is_bounded(value: Any, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        Message.from_map({"v": 1, "id": "i", "task": "t", "fair": value})


def test_the_envelope_field_is_fair_and_left_out_when_none() -> None:
    keyed = Message(id="i", task="t", fair_key="tenant")
    assert keyed.to_map()["fair"] == "tenant"
    assert Message.from_map(keyed.to_map()).fair_key == "tenant"
    assert "fair" not in Message(id="i", task="t").to_map()


def test_tenants_take_turns_on_the_memory_broker(app: GopherQ) -> None:
    @app.task(fair_key="tenant")
    def work(tenant: str, n: int) -> None: ...

    app.send_many(work.s("a", n) for n in range(50))
    late = [work.delay("b", n).id for n in range(3)]
    first = [d.id for d in app.broker.reserve(["default"], 8, 0)]
    assert set(late) <= set(first)
