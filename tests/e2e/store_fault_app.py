"""An e2e app whose result store fails to store STARTED records at first.

Copied over ``tasks.py`` by the tests that use it. Each worker process fails
its first ``FAILURES`` attempts to store a STARTED record (the record written
as a task that may run long starts), as a store that is down for a moment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from gopherq import GopherQ
from gopherq.errors import BrokerUnavailable
from gopherq.results import JobRecord
from gopherq.results.sqlite import SQLiteResultBackend
from gopherq.states import State

FAILURES = 3


class StartFailing(SQLiteResultBackend):
    """Raises ``BrokerUnavailable`` on the first ``FAILURES`` STARTED stores of a process."""

    failed = 0  # per process: a forked child starts from the supervisor's 0

    def store(self, records: Sequence[JobRecord]) -> None:
        if any(r.state is State.STARTED for r in records) and StartFailing.failed < FAILURES:
            StartFailing.failed += 1
            raise BrokerUnavailable("result store down (injected)")
        super().store(records)


app = GopherQ("e2e-store", backend=StartFailing(os.environ["GOPHERQ_BROKER_URL"]))


@app.task(timeout=30)  # a hard time limit: its STARTED record is always written first
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
