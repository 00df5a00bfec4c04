"""``Sender``: async sends, the sends of concurrent requests in one ``send_many``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import broker_url
from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.errors import BrokerUnavailable
from gopherq.task import Signature
from gopherq.web import create_app
from gopherq.web.sender import Sender


class Gate:
    """Wraps ``app.send_many``: records each batch and can hold the calls back."""

    def __init__(self, app: GopherQ) -> None:
        self.batches: list[int] = []
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.fail: BaseException | None = None
        self._send_many = app.send_many
        app.send_many = self  # type: ignore[method-assign]

    def hold(self) -> None:
        """Hold the next batches in the broker call until ``open`` is set."""
        self.open.clear()
        self.entered.clear()

    def __call__(self, signatures: Any) -> Any:
        signatures = list(signatures)
        self.batches.append(len(signatures))
        self.entered.set()
        assert self.open.wait(10)
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure
        return self._send_many(signatures)


@pytest.fixture
def app(broker_kind: str, tmp_path: Path) -> Iterator[GopherQ]:
    app = GopherQ("sendertest", broker=broker_url(broker_kind, tmp_path), events=None)

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def add(app: GopherQ, x: int, y: int = 0, **options: Any) -> Signature[Any]:
    return Signature(app.get_task("add"), (x, y), {}, options)


async def started(gate: Gate) -> None:
    """Wait (without blocking the loop) until the gate holds a batch."""
    while not gate.entered.is_set():
        await asyncio.sleep(0.001)


def test_send_returns_the_results_in_order(app: GopherQ) -> None:
    sender = Sender(app)

    async def main() -> list[str]:
        results = await sender.send([add(app, 1, 2), add(app, 3, 4)])
        return [r.id for r in results]

    try:
        ids = asyncio.run(main())
    finally:
        sender.close()
    assert len(set(ids)) == 2
    assert asyncio.run(Sender(app).send([])) == []


def test_concurrent_sends_share_one_broker_call(app: GopherQ) -> None:
    gate = Gate(app)
    sender = Sender(app)

    async def main() -> list[list[str]]:
        gate.hold()
        first = asyncio.ensure_future(sender.send([add(app, 0)]))
        await started(gate)  # the first batch is in the broker call: the rest pile up
        rest = [asyncio.ensure_future(sender.send([add(app, n), add(app, n)])) for n in range(20)]
        await asyncio.sleep(0.05)
        gate.open.set()
        return [[r.id for r in await f] for f in [first, *rest]]

    try:
        ids = asyncio.run(main())
    finally:
        sender.close()
    assert gate.batches == [1, 40]
    assert [len(i) for i in ids] == [1] + [2] * 20
    assert len({i for each in ids for i in each}) == 41


def test_a_batch_holds_at_most_max_batch_signatures(app: GopherQ) -> None:
    gate = Gate(app)
    sender = Sender(app, max_batch=5)

    async def main() -> None:
        gate.hold()
        first = asyncio.ensure_future(sender.send([add(app, 0)]))
        await started(gate)
        big = asyncio.ensure_future(sender.send([add(app, n) for n in range(7)]))
        small = [asyncio.ensure_future(sender.send([add(app, n)])) for n in range(6)]
        await asyncio.sleep(0.05)
        gate.open.set()
        await asyncio.gather(first, big, *small)

    try:
        asyncio.run(main())
    finally:
        sender.close()
    assert gate.batches == [1, 7, 5, 1]  # a request bigger than a batch goes alone


def test_an_input_error_reaches_only_the_request_that_caused_it(app: GopherQ) -> None:
    gate = Gate(app)
    sender = Sender(app)

    async def main() -> list[Any]:
        gate.hold()
        first = asyncio.ensure_future(sender.send([add(app, 0)]))
        await started(gate)
        bad = Signature(app.get_task("add"), (1, 2, 3), {}, {})  # one too many
        sends = [sender.send([add(app, 1)]), sender.send([bad]), sender.send([add(app, 2)])]
        futures = [asyncio.ensure_future(s) for s in sends]
        await asyncio.sleep(0.05)
        gate.open.set()
        return await asyncio.gather(first, *futures, return_exceptions=True)

    try:
        _, good, bad, other = asyncio.run(main())
    finally:
        sender.close()
    assert isinstance(bad, TypeError)
    assert len(good) == 1 and len(other) == 1
    assert gate.batches == [1, 3, 1, 1, 1]  # the failed batch, sent again request by request


def test_a_broker_error_reaches_every_request_of_its_batch_only(app: GopherQ) -> None:
    gate = Gate(app)
    sender = Sender(app)

    async def main() -> list[Any]:
        gate.hold()
        gate.fail = BrokerUnavailable("down")
        first = asyncio.ensure_future(sender.send([add(app, 0)]))
        await started(gate)
        later = [asyncio.ensure_future(sender.send([add(app, n)])) for n in range(3)]
        await asyncio.sleep(0.05)
        gate.open.set()
        return await asyncio.gather(first, *later, return_exceptions=True)

    try:
        first, *later = asyncio.run(main())
    finally:
        sender.close()
    assert isinstance(first, BrokerUnavailable)
    assert all(len(r) == 1 for r in later)  # the next batch is sent as usual
    assert gate.batches == [1, 3]


def test_close_sends_what_is_pending_then_refuses(app: GopherQ) -> None:
    gate = Gate(app)
    sender = Sender(app)

    async def main() -> list[Any]:
        gate.hold()
        futures = [asyncio.ensure_future(sender.send([add(app, 0)]))]
        await started(gate)
        futures += [asyncio.ensure_future(sender.send([add(app, n)])) for n in range(4)]
        await asyncio.sleep(0.01)
        closing = threading.Thread(target=sender.close)
        closing.start()
        while not sender._closing:
            await asyncio.sleep(0.001)
        with pytest.raises(BrokerUnavailable, match="stopping"):
            await sender.send([add(app, 9)])
        gate.open.set()
        results = await asyncio.gather(*futures)
        closing.join(10)
        return results

    results = asyncio.run(main())
    assert all(len(r) == 1 for r in results)
    assert gate.batches == [1, 4]


def test_close_fails_what_it_could_not_send_in_time(app: GopherQ) -> None:
    gate = Gate(app)
    sender = Sender(app)

    async def main() -> list[Any]:
        gate.hold()
        stuck = asyncio.ensure_future(sender.send([add(app, 0)]))
        await started(gate)
        left = asyncio.ensure_future(sender.send([add(app, 1)]))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(sender.close, 0.05)  # the broker call still hangs
        outcome = await asyncio.gather(left, return_exceptions=True)
        gate.open.set()
        return [*outcome, len(await stuck)]

    left, stuck = asyncio.run(main())
    assert isinstance(left, BrokerUnavailable)
    assert stuck == 1  # the batch in the broker call still completes


def test_an_idempotency_key_hit_returns_the_first_id(app: GopherQ) -> None:
    gate = Gate(app)
    sender = Sender(app)

    async def main() -> list[str]:
        [first] = await sender.send([add(app, 1, key="order-7")])
        gate.hold()
        blocker = asyncio.ensure_future(sender.send([add(app, 0)]))
        await started(gate)
        same_batch = [
            asyncio.ensure_future(sender.send([add(app, n, key="order-7")])) for n in range(3)
        ]
        await asyncio.sleep(0.05)
        gate.open.set()
        await blocker
        return [first.id, *[(await f)[0].id for f in same_batch]]

    try:
        ids = asyncio.run(main())
    finally:
        sender.close()
    assert len(set(ids)) == 1
    assert gate.batches[-1] == 3


def test_the_app_lifespan_starts_and_closes_the_sender(app: GopherQ) -> None:
    api = create_app(app, auth=False)
    sender = api.state.gopherq.sender
    with TestClient(api):
        assert sender._thread is not None and sender._thread.is_alive()
    assert not sender._thread.is_alive()
    with TestClient(api):  # started again by a second lifespan
        assert sender._thread.is_alive()


def test_a_send_starts_the_sender_without_a_lifespan(app: GopherQ) -> None:
    sender = create_app(app, auth=False).state.gopherq.sender

    async def main() -> str:
        [result] = await sender.send([add(app, 1)])
        return result.id

    try:
        assert asyncio.run(main())
    finally:
        sender.close()
