"""Instructions Redis runs per message for gopherq's scripts, counted by callgrind.

::

    python benchmarks/bench_redis_server.py [--json] [--tasks N] [--bulk N] [--fair-keys N]

Wall-clock figures swing with whatever else a shared machine is doing; the
instructions a program runs do not. This starts a private ``redis-server`` on
a free loopback port under ``valgrind --tool=callgrind`` and counts, per
message, what Redis runs (command parsing, the scripts, replies) in three
phases, each from a fresh count:

enqueue   ``--tasks`` single ``.delay()`` calls
bulk      ``--bulk`` messages in batches of 1,000 (``send_many``)
drain     every message above reserved 16 at a time and acknowledged, as a
          worker does (the consumer runs in this process: only Redis is counted)

``--fair-keys N`` sends every message with a fair key, one of N in turn (see
docs/flow-control.md), to count what fair sharing costs.

Use it to compare versions of the scripts: run it on each, the counts are
repeatable to a fraction of a percent. Needs ``valgrind`` (with
``callgrind_control``) and ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from _common import free_port

from gopherq import GopherQ
from gopherq.task import Signature

BATCH = 1000
PREFETCH = 16


class CountedRedis:
    """A redis-server under callgrind; ``count(phase)`` gives the instructions it ran."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        argv = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.%p", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit("redis-server did not start under valgrind") from None
                time.sleep(0.2)

    def reset(self) -> None:
        """Start counting from zero."""
        self._control("-z")

    def _control(self, flag: str) -> None:
        command = ["callgrind_control", flag, str(self.process.pid)]
        subprocess.run(command, check=True, capture_output=True)

    def count(self) -> int:
        """Instructions since the last ``reset``, from a fresh dump."""
        before = set(self.folder.glob("cg.*"))
        self._control("-d")
        deadline = time.monotonic() + 30
        while not (new := set(self.folder.glob("cg.*")) - before):
            if time.monotonic() > deadline:
                raise SystemExit("callgrind wrote no dump")
            time.sleep(0.1)
        text = new.pop().read_text(errors="replace")
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if not found:
            raise SystemExit("no totals in the callgrind dump")
        return int(found[1])

    def stop(self) -> None:
        self.client.shutdown(nosave=True)
        self.process.wait(timeout=60)


def measure(server: CountedRedis, tasks: int, bulk: int, fair_keys: int = 0) -> dict[str, float]:
    """Instructions per message in each phase; with ``fair_keys``, each message has one."""
    app = GopherQ("bench", broker=f"redis://127.0.0.1:{server.port}/0", events="off")

    @app.task(name="bench.noop", ignore_result=True)
    def noop() -> None:
        """Nothing: only the messages count."""

    noop.delay()  # loads the scripts, opens the connection
    app.broker.reserve(["default"], 1, 0)
    figures: dict[str, float] = {}

    def message(n: int) -> Signature[None]:
        return noop.s().set(fair_key=f"tenant-{n % fair_keys}") if fair_keys else noop.s()

    server.reset()
    for n in range(tasks):
        if fair_keys:
            app.send(message(n))
        else:
            noop.delay()
    figures["enqueue"] = server.count() / tasks

    server.reset()
    for first in range(0, bulk, BATCH):
        app.send_many([message(n) for n in range(first, min(first + BATCH, bulk))])
    figures["bulk"] = server.count() / bulk

    server.reset()
    drained = 0
    while batch := app.broker.reserve(["default"], PREFETCH, 0):
        app.broker.ack(batch)
        drained += len(batch)
    figures["drain"] = server.count() / drained
    app.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--tasks", type=int, default=3000, help="single .delay() calls")
    parser.add_argument("--bulk", type=int, default=5000, help="messages sent in batches")
    parser.add_argument("--fair-keys", type=int, default=0, help="fair keys to send with")
    options = parser.parse_args()
    missing = [p for p in ("valgrind", "callgrind_control", "redis-server") if not shutil.which(p)]
    if missing:
        print(f"needs {', '.join(missing)} on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gqbench-cg-") as folder:
        server = CountedRedis(Path(folder))
        try:
            figures = measure(server, options.tasks, options.bulk, options.fair_keys)
        finally:
            server.stop()
    if options.json:
        print(json.dumps(figures))
    else:
        for phase, per_message in figures.items():
            print(f"{phase:8s} {per_message:10,.0f} instructions in Redis per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
