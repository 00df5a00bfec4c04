"""What the SQLite broker's ``message_counts`` triggers cost on the write path, in one
process, without a worker's noise.

::

    python benchmarks/bench_sqlite_counts.py [--messages N] [--repeat N] [--json]

Two fresh files in a temporary directory: one as the broker makes it, one whose
counting triggers (and table) were dropped after opening, which is the write path
of a release before them. Rounds alternate between the two (``--repeat`` each, each first in turn);
a round sends ``--messages`` messages of a no-op task one by one with ``.delay()``
(events on, as by default: the message and its ``task-enqueued`` event), then
leases them in batches of ``BATCH`` and acks each batch, as a worker does; then
sends ``--messages`` more in one ``Broker.enqueue`` call (one transaction, as
``send_many``) and purges them.
Printed: the best round's CPU time (``time.process_time``) per message of each
step with and without the triggers, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gopherq import GopherQ
from gopherq.brokers import Envelope
from gopherq.brokers.sqlite import SQLiteBroker
from gopherq.message import Message, new_id
from gopherq.task import Task

BATCH = 10  # what a worker's consumer reserves at once under load
TRIGGERS = ("insert", "delete", "update", "move")


def open_app(path: Path, counted: bool) -> tuple[GopherQ, Task[[], None]]:
    """An app on a fresh file, and its no-op task."""
    app = GopherQ("bench", broker=f"sqlite:///{path}")

    @app.task(name="bench.noop", ignore_result=True)
    def noop() -> None:
        """Do nothing."""

    broker = app.broker
    assert isinstance(broker, SQLiteBroker)
    broker.ping()  # opens the file, with its triggers
    if not counted:
        with broker._db.write() as conn:
            for trigger in TRIGGERS:
                conn.execute(f"DROP TRIGGER messages_count_{trigger}")
            conn.execute("DROP TABLE message_counts")
    return app, noop


def one_round(app: GopherQ, noop: Task[[], None], messages: int) -> dict[str, float]:
    """CPU microseconds per message of each step."""
    start = time.process_time()
    for _ in range(messages):
        noop.delay()
    sent = time.process_time()
    while taken := app.broker.reserve(["default"], BATCH, 0):
        app.broker.ack(taken)
    drained = time.process_time()
    body = app.codec.encode(Message(new_id(), "bench.noop"))
    app.broker.enqueue([Envelope(new_id(), "default", 2, body) for _ in range(messages)])
    batched = time.process_time()
    app.broker.purge("default")
    return {
        "delay": (sent - start) / messages * 1e6,
        "lease+ack": (drained - sent) / messages * 1e6,
        "batch send": (batched - drained) / messages * 1e6,
    }


def measure(messages: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        apps = {
            "without": open_app(Path(tmp) / "without.db", counted=False),
            "with": open_app(Path(tmp) / "with.db", counted=True),
        }
        best: dict[str, dict[str, float]] = {name: {} for name in apps}
        for round in range(repeat):
            order = list(apps.items())
            for name, (app, noop) in order[round % 2 :] + order[: round % 2]:
                for step, micros in one_round(app, noop, messages).items():
                    best[name][step] = min(best[name].get(step, micros), micros)
        for app, _ in apps.values():
            app.close()
    return {
        "messages": messages,
        "repeat": repeat,
        "us_per_message": best,
        "ratio": {step: best["with"][step] / best["without"][step] for step in best["with"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.messages, args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    us = result["us_per_message"]
    print(f"CPU per message, best of {args.repeat} rounds of {args.messages:,}:")
    for step in us["with"]:
        print(
            f"  {step:10} without counts {us['without'][step]:6.1f} us, "
            f"with {us['with'][step]:6.1f} us, ratio {result['ratio'][step]:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
