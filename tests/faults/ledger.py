"""The fault suite's harness: real workers, a ledger of executions, and the figures.

A ``FaultRun`` is the e2e harness's ``Run`` (``tests/e2e/harness.py``) with the
fault app (``fault_app.py``) as ``tasks.py``: every task appends a ``start``
and a ``done`` line to ``ledger.log``. A scenario sends work, injects its fault
(notes the time with ``fault()``), lets the backlog drain, and ``check()``
counts from the ledger:

- lost: sent, never completed (and not where the scenario expects it, such as
  dead letters);
- duplicates: completions beyond the first, which at-least-once delivery allows
  for work a fault interrupted (at most one per process killed or stopped while
  its tasks were at least ``SHORT_TASK`` long, since such tasks are settled one at
  a time);
- recovery: seconds from the fault until the last task of the backlog completed.

``check()`` asserts lost == 0, duplicates <= kills, a recovery within the
scenario's bound, nothing left ready, scheduled, leased or STARTED, and every
record SUCCEEDED; with ``GOPHERQ_TEST_FAULTS_REPORT=FILE`` it appends the figures
to FILE as a JSON line (``python -m tests.faults`` prints them as a table).

Scale: ``GOPHERQ_TEST_FAULTS=full`` runs the full counts (10,000 tasks with
random child kills, ...); by default the reduced counts run, in seconds.
(``GOPHERQ_TEST_*`` variables are not settings, so they reach no ``Settings``.)
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import services

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from harness import BROKERS, Run, stop, wait_for

from gopherq import State
from gopherq.brokers import Envelope
from gopherq.message import Message, new_id

HERE = Path(__file__).parent
FULL = os.environ.get("GOPHERQ_TEST_FAULTS") == "full"
REPORT = os.environ.get("GOPHERQ_TEST_FAULTS_REPORT")

__all__ = [
    "BROKERS", "FaultRun", "Figures", "open_fault_run", "scaled", "sigkill", "stop", "wait_for",
]  # fmt: skip


def scaled(ci: int, full: int) -> int:
    """``full`` in the full run (``GOPHERQ_TEST_FAULTS=full``), else ``ci``."""
    return full if FULL else ci


@dataclass(frozen=True)
class Figures:
    """What one scenario measured."""

    scenario: str
    broker: str
    tasks: int
    kills: int
    lost: int
    duplicates: int
    recovery: float
    """Seconds from the fault until the backlog drained."""


class FaultRun(Run):
    """A ``Run`` of the fault app, with its ledger; ``server`` is its private Redis."""

    def __init__(
        self, path: Path, broker: str, url: str | None = None,
        server: services.RedisServer | None = None,
    ) -> None:  # fmt: skip
        super().__init__(path, url)
        (path / "tasks.py").write_bytes((HERE / "fault_app.py").read_bytes())
        self.broker_kind = broker
        self.server = server
        self.ledger = path / "ledger.log"
        self.sent: list[str] = []
        self.fault_at: float | None = None
        self._read = 0  # bytes of the ledger parsed so far
        self._lines: list[list[Any]] = []
        self._done: collections.Counter[str] = collections.Counter()

    def send_work(self, count: int, task: str = "work", *args: Any, batch: int = 500) -> list[str]:
        """Send ``count`` tasks ``tasks.<task>(*args)`` in batches of ``batch``; their ids."""
        ids = []
        for start in range(0, count, batch):
            messages = [
                Message(id=new_id(), task=f"tasks.{task}", args=list(args))
                for _ in range(min(batch, count - start))
            ]
            self.producer.broker.enqueue(
                [Envelope(m.id, m.queue, m.priority, self.producer.codec.encode(m))
                 for m in messages]
            )  # fmt: skip
            ids += [m.id for m in messages]
        self.sent += ids
        return ids

    def lines(self, event: str | None = None) -> list[list[Any]]:
        """The ledger's lines ``[event, id, pid, attempt, time]``, of one event or all."""
        self._catch_up()
        return [line for line in self._lines if event is None or line[0] == event]

    def completed(self) -> collections.Counter[str]:
        """How many times each task id completed."""
        self._catch_up()
        return self._done.copy()

    def _catch_up(self) -> None:
        """Parse the whole lines appended to the ledger since the last call (the
        scenarios poll it, and a full run's ledger has tens of thousands)."""
        try:
            with self.ledger.open("rb") as ledger:
                ledger.seek(self._read)
                data = ledger.read()
        except FileNotFoundError:
            return
        whole = data[: data.rfind(b"\n") + 1]
        self._read += len(whole)
        for text in whole.splitlines():
            line = json.loads(text)
            self._lines.append(line)
            if line[0] == "done":
                self._done[line[1]] += 1

    def children(self, worker: subprocess.Popen[bytes]) -> list[int]:
        """The pids of ``worker``'s live child processes."""
        try:
            return [p.pid for p in psutil.Process(worker.pid).children()
                    if p.status() != psutil.STATUS_ZOMBIE]  # fmt: skip
        except psutil.Error:
            return []

    def busy_child(self, worker: subprocess.Popen[bytes], timeout: float = 15) -> int:
        """A child of ``worker`` in the middle of a task (its last ledger line a start)."""
        found: list[int] = []

        def look() -> bool:
            last: dict[int, str] = {}
            for event, _, pid, _, _ in self.lines():
                last[pid] = event
            children = set(self.children(worker))
            found[:] = [pid for pid, event in last.items()
                        if event == "start" and pid in children]  # fmt: skip
            return bool(found)

        wait_for(look, timeout, self.log)
        return found[-1]

    def wait_progress(self, count: int, timeout: float = 30) -> None:
        """Wait until at least ``count`` tasks completed."""
        wait_for(lambda: len(self.completed()) >= count, timeout, self.log)

    def fault(self) -> None:
        """Note the time of the (first) fault: recovery is measured from here."""
        if self.fault_at is None:
            self.fault_at = time.time()

    def wait_drained(self, ids: Sequence[str] | None = None, timeout: float = 60) -> None:
        """Wait until every id of ``ids`` (default: all sent) completed."""
        wanted = set(self.sent if ids is None else ids)
        wait_for(lambda: wanted <= set(self.completed()), timeout,
                 lambda: f"{len(wanted - set(self.completed()))} of {len(wanted)} not "
                         f"completed\n{self.log()[-6000:]}")  # fmt: skip

    def check(
        self,
        scenario: str,
        *,
        kills: int,
        expected: Sequence[str] | None = None,
        recovery_bound: float = 60.0,
        settle_timeout: float = 20.0,
    ) -> Figures:
        """Count and assert (see the module docstring); ``expected``: the ids that must
        complete (default: every id sent)."""
        ids = list(self.sent if expected is None else expected)
        done = self.completed()
        lost = sum(1 for id in ids if done[id] == 0)
        duplicates = sum(done[id] - 1 for id in ids if done[id] > 1)
        finish = {}
        for _, id, _, _, when in self.lines("done"):
            finish.setdefault(id, when)
        last = max((finish[id] for id in ids if id in finish), default=time.time())
        recovery = max(last - (self.fault_at or last), 0.0)
        figures = Figures(scenario, self.broker_kind, len(ids), kills, lost, duplicates,
                          round(recovery, 2))  # fmt: skip
        if REPORT:
            with open(REPORT, "a") as report:
                report.write(json.dumps(asdict(figures)) + "\n")
        print(f"\n{figures}")
        assert lost == 0, f"{figures}\n{self.log()[-6000:]}"
        assert duplicates <= kills, f"{figures}\n{self.log()[-6000:]}"
        assert recovery <= recovery_bound, figures
        self.wait_settled(ids, settle_timeout)
        return figures

    def wait_settled(self, ids: Sequence[str], timeout: float = 20.0) -> None:
        """Wait until nothing is ready, scheduled or leased, no record is STARTED and the
        record of each of ``ids`` is SUCCEEDED (or the task keeps no result)."""
        broker, backend = self.producer.broker, self.producer.backend

        def unsettled() -> list[str]:
            problems = [f"{q}: {s}" for q, s in broker.stats().items()
                        if s.ready or s.scheduled or s.running]  # fmt: skip
            problems += [f"{r.id} {r.task} left STARTED"
                         for r in backend.jobs(state=State.STARTED, limit=10)]  # fmt: skip
            for id in ids:
                record = backend.get(id)
                if record is not None and record.state is not State.SUCCEEDED:
                    problems.append(f"{id} {record.task} {record.state.value}")
            return problems

        wait_for(lambda: not unsettled(), timeout,
                 lambda: f"{unsettled()[:10]}\n{self.log()[-6000:]}")  # fmt: skip


@contextmanager
def open_fault_run(
    broker: str,
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *redis_args: str,
    url: str | None = None,
) -> Iterator[FaultRun]:
    """A ``FaultRun`` in ``path`` on ``broker``: a SQLite file there (or at ``url``),
    or a private ``redis-server`` started with ``redis_args`` (so that a scenario
    may stop, restart or reconfigure it); its workers and server stop at the end."""
    for name in list(os.environ):
        if name.startswith("GOPHERQ_"):
            monkeypatch.delenv(name)
    server = None
    if broker == "redis":
        server = services.RedisServer(path / "redis", *redis_args).start()
        url = services.with_prefix(server.url)
    elif broker != "sqlite":
        raise ValueError(f"unknown broker {broker!r}; use one of {BROKERS}")
    (path / "run").mkdir()
    handle = FaultRun(path / "run", broker, url, server)
    try:
        yield handle
    finally:
        handle.close()
        if server is not None:
            server.stop()


def sigkill(pid: int) -> bool:
    """SIGKILL ``pid``; False if it was already gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True
