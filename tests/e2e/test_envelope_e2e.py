"""End to end: messages over the envelope's bounds, planted by a foreign producer,
are dead-lettered by a real worker, which stays up and keeps running tasks."""

from __future__ import annotations

import json
import math

import msgpack
import pytest
from harness import Run, run, stop, wait_for

from gopherq import GopherQ, State
from gopherq.brokers import Envelope
from gopherq.message import new_id

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
__all__ = ["run"]  # the fixture


def plant(run: Run, **fields: object) -> str:
    """Enqueue a hand-made envelope, as a producer that skips gopherq's checks would."""
    id = new_id()
    body = msgpack.packb({"v": 1, "id": id, "task": "tasks.add", "args": [1, 2], **fields})
    run.producer.broker.enqueue([Envelope(id, "default", 2, body)])
    return id


def test_a_huge_task_name_and_a_nan_time_are_dead_lettered(run: Run) -> None:
    worker = run.worker("-c", "1")
    run.wait_ready(worker)
    planted = {
        plant(run, task="t" * 40_000): "'task' is 40000 characters long",
        plant(run, created=math.nan): "'created' is not a finite number: nan",
    }
    wait_for(lambda: len(run.producer.broker.dead_letters()) == 2, 30, run.log)
    letters = {letter.id: letter for letter in run.producer.broker.dead_letters()}
    assert set(letters) == set(planted)
    for id, error in planted.items():
        assert letters[id].reason == "DECODE_ERROR"
        assert error in letters[id].error
        assert run.producer.result(id).state is State.DEAD
    assert worker.poll() is None, run.log()
    assert run.send("add", 2, 3).get(timeout=30) == 5, run.log()
    assert worker.poll() is None, run.log()
    assert stop(worker, timeout=30) == 0, run.log()


def test_a_signing_worker_runs_signed_messages_only(run: Run) -> None:
    keys = {"k1": "a secret of at least sixteen bytes"}
    worker = run.worker("-c", "1", signing_keys=json.dumps(keys))
    run.wait_ready(worker)
    signed = GopherQ("signed", broker=run.url, signing_keys=keys)
    try:
        assert signed.send_task("tasks.add", (2, 3)).get(timeout=30) == 5, run.log()
        unsigned = run.send("add", 1, 1).id
        wait_for(run.producer.broker.dead_letters, 30, run.log)
        [letter] = run.producer.broker.dead_letters()
        assert (letter.id, letter.reason) == (unsigned, "SIGNATURE_INVALID")
        assert letter.error == "SignatureError: the message is not signed"
        assert run.producer.result(unsigned).state is State.DEAD
        assert worker.poll() is None, run.log()
    finally:
        signed.close()
    assert stop(worker, timeout=30) == 0, run.log()
