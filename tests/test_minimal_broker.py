"""A broker of the hot path alone (tests/minimal_broker.py): it runs tasks, and every
admin operation it lacks is a clear error, in Python and in the ``gopherq`` command.

The contract suite runs its hot-path tests on it too (kind ``minimal``).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from minimal_broker import DictBroker

from gopherq import GopherQ, State, admin
from gopherq import cli as cli_module
from gopherq.brokers import Broker, BrokerAdmin, Cancellation, DeadLetter, Delivery, Envelope
from gopherq.errors import BrokerError, NotSupported
from gopherq.worker import Consumer, Exit

HOT_PATH = {
    "enqueue",
    "reserve",
    "ack",
    "retry",
    "dead",
    "extend",
    "held",
    "requeue",
    "recover",
    "ping",
    "close",
}

# Each admin operation with arguments to call it with.
ADMIN_CALLS: list[tuple[str, tuple[object, ...]]] = [
    ("cancel", (["some-id"],)),
    ("stats", ()),
    ("pause", ("default",)),
    ("resume", ("default",)),
    ("purge", ("default",)),
    ("dead_letters", ()),
    ("requeue_dead", (None,)),
    ("delete", ("some-id",)),
    ("locate", ("some-id",)),
]


@pytest.fixture
def app() -> Iterator[GopherQ]:
    app = GopherQ("minimal", DictBroker(), backend="memory://")
    yield app
    app.close()


def test_the_hot_path_is_all_a_broker_must_implement() -> None:
    assert Broker.__abstractmethods__ == HOT_PATH
    assert {"stats", "cancel", "dead_letters", "locate"} <= set(vars(BrokerAdmin))


@pytest.mark.parametrize(("operation", "args"), ADMIN_CALLS)
def test_an_admin_operation_it_lacks_names_the_broker_and_the_operation(
    operation: str, args: tuple[object, ...]
) -> None:
    broker = DictBroker("minimal://user:secret@host")
    with pytest.raises(NotSupported) as caught:
        getattr(broker, operation)(*args)
    message = str(caught.value)
    assert message.startswith(
        f"DictBroker (minimal://user:***@host) does not support {operation}()"
    )
    assert "secret" not in message
    assert "\n" not in message
    assert (caught.value.broker, caught.value.operation) == (
        "DictBroker (minimal://user:***@host)",
        operation,
    )
    assert isinstance(caught.value, BrokerError)
    assert isinstance(caught.value, NotImplementedError)


def test_without_cancel_nothing_is_cancel_requested() -> None:
    broker = DictBroker()
    broker.enqueue([Envelope("a", "default", 2, b"")])
    assert broker.cancel_requested(broker.reserve(["default"], 1, 0)) == set()


def test_purge_dead_falls_back_on_dead_letters_and_delete() -> None:
    class Lister(DictBroker):
        """Lists dead letters and deletes them, one of them undeletable."""

        def __init__(self) -> None:
            super().__init__()
            self.letters = {f"{q}{i}": q for q in "ab" for i in range(7)}

        def dead_letters(
            self, queue: str | None = None, offset: int = 0, limit: int = 100
        ) -> list[DeadLetter]:
            ids = [id for id, q in self.letters.items() if queue in (None, q)]
            return [DeadLetter(id, self.letters[id], 2, b"", 0, "", "", 0.0) for id in ids][
                offset : offset + limit
            ]

        def delete(self, id: str) -> bool:
            return id != "a3" and self.letters.pop(id, None) is not None

    broker = Lister()
    assert broker.purge_dead("b") == 7
    assert broker.purge_dead() == 6
    assert list(broker.letters) == ["a3"]
    assert broker.purge_dead() == 0
    with pytest.raises(NotSupported, match=r"does not support dead_letters\(\)"):
        DictBroker().purge_dead()


def test_dead_letter_falls_back_on_locate_and_dead_letters() -> None:
    class Lister(DictBroker):
        """Lists 1,200 dead letters (more than one page) and locates them."""

        def dead_letters(
            self, queue: str | None = None, offset: int = 0, limit: int = 100
        ) -> list[DeadLetter]:
            letters = [DeadLetter(f"d{i}", "a", 2, b"", 0, "", "", 0.0) for i in range(1200)]
            return letters[offset : offset + limit]

        def locate(self, id: str) -> State | None:
            return State.DEAD if id.startswith("d") else None

    broker = Lister()
    letter = broker.dead_letter("d1100")
    assert letter is not None and letter.id == "d1100"
    assert broker.dead_letter("d5000") is None
    assert broker.dead_letter("x") is None
    with pytest.raises(NotSupported, match=r"does not support locate\(\)"):
        DictBroker().dead_letter("d1")


def test_cancel_without_cancel_requested_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="implements cancel but not cancel_requested"):

        class HalfCancel(DictBroker):
            def cancel(self, ids: Sequence[str]) -> list[Cancellation]:
                return []

    class Cancels(DictBroker):
        def cancel(self, ids: Sequence[str]) -> list[Cancellation]:
            return []

        def cancel_requested(self, deliveries: Sequence[Delivery]) -> set[str]:
            return set()


def test_an_app_runs_tasks_on_it(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(retries=1, retry_delay=0)
    def boom() -> None:
        raise ValueError("nope")

    sum_, failed = add.delay(2, 3), boom.delay()
    assert sum_.state is State.PENDING  # no record, and the broker cannot locate it
    consumer = Consumer(app, ["default"], burst=True, reserve_timeout=0.2)
    assert consumer.run() is Exit.DRAINED
    assert sum_.get(timeout=5) == 5
    record = failed.record()  # retried once through the broker, then dead-lettered
    assert record is not None
    assert (record.state, record.attempts) == (State.FAILED, 2)
    assert app.broker.reserve(["default"], 10, 0) == []


def test_the_app_and_its_admin_layer_say_what_is_missing(app: GopherQ) -> None:
    with pytest.raises(NotSupported, match=r"does not support stats\(\)"):
        app.broker.stats()
    with pytest.raises(NotSupported, match=r"does not support cancel\(\)"):
        app.cancel(["some-id"])
    with pytest.raises(NotSupported, match=r"does not support dead_letters\(\)"):
        admin.dead_letters(app)
    assert admin.known_queues(app) == ["default"]  # the app's own, without stats
    assert admin.job_status(app, "unknown") == {"id": "unknown", "state": "PENDING"}
    assert admin.check_health(app).ok


APP_SOURCE = """
from gopherq import GopherQ
from minimal_broker import DictBroker

app = GopherQ("minimal-cli", DictBroker(), backend="memory://")
"""


@pytest.mark.parametrize(
    ("argv", "operation"),
    [
        (["stats"], "stats"),
        (["dead", "list"], "dead_letters"),
        (["dead", "retry", "x"], "requeue_dead"),
        (["dead", "purge", "--yes"], "dead_letters"),
        (["purge", "default", "--yes"], "purge"),
        (["pause", "default"], "pause"),
        (["resume", "default"], "resume"),
        (["cancel", "x"], "cancel"),
    ],
)
def test_the_cli_shows_a_missing_admin_operation_as_one_line(
    argv: list[str], operation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"minimalapp_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(APP_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader adds the cwd
    for var in ("GOPHERQ_APP", "GOPHERQ_BROKER_URL", "GOPHERQ_RESULT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    try:
        result = CliRunner().invoke(cli_module.main, ["-A", module, *argv])
    finally:
        sys.modules.pop(module, None)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        f"Error: DictBroker (minimal://) does not support {operation}(): an optional broker "
        "operation it does not implement (see docs/brokers.md, Writing a broker)"
    ]
