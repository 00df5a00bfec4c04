"""The app the fault scenarios run; copied into each scenario's directory as ``tasks.py``.

Every task appends one line to ``ledger.log`` beside this module when it
begins and one when it completes: ``[event, task id, pid, attempt, time]``. A
line is one ``O_APPEND`` write, so lines from many processes never interleave,
and the ledger shows every execution: a task completed twice has two ``done``
lines (a duplicate), a task sent and never completed has none (lost).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from gopherq import GopherQ, current_task

app = GopherQ("faults")
LEDGER = Path(__file__).with_name("ledger.log")


def note(event: str) -> None:
    """Append ``event`` for the current task to the ledger, in one write."""
    task = current_task()
    line = json.dumps([event, task.id, os.getpid(), task.attempt, time.time()]) + "\n"
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task
def work(seconds: float = 0.01, padding: str = "") -> int:
    """Takes ``seconds``; ``padding`` makes the message bigger (memory scenarios)."""
    note("start")
    time.sleep(seconds)
    note("done")
    return len(padding)


@app.task(ignore_result=True)
def quiet(seconds: float = 0.01, padding: str = "") -> None:
    """``work`` that stores no result: only the broker holds anything of it."""
    note("start")
    time.sleep(seconds)
    note("done")


@app.task(timeout=120)
def announced(seconds: float = 0.01) -> None:
    """``work`` with a time limit: its start is stored (a STARTED record) before it runs."""
    note("start")
    time.sleep(seconds)
    note("done")


@app.task
def crash() -> None:
    """Kills its own process, every time."""
    note("start")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(retries=3, retry_delay=0.1, jitter=False)
def stalls(seconds: float) -> str:
    """Takes ``seconds``, and fails (to be retried) if that took far longer than asked:
    an execution whose process was stopped past its lease ends in a retry, one that
    ran through succeeds."""
    note("start")
    began = time.monotonic()
    time.sleep(seconds)
    if time.monotonic() - began > seconds + 1.0:
        note("stale")
        raise RuntimeError("stopped past the lease")
    note("done")
    return "ran through"


@app.task
def echo(*args: Any, **kwargs: Any) -> int:
    """Takes any arguments (the hostile messages' task); returns how many it got."""
    return len(args) + len(kwargs)


@app.task(timeout=0.3)
def hangs() -> None:
    """Runs past its hard time limit, every time: its process is killed."""
    note("start")
    time.sleep(30)
