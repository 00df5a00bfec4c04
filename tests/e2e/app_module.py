"""The app the e2e workers run; copied into each test's directory as ``tasks.py``.

Tasks append JSON lines ``[time, pid, event, *details]`` to ``events.log``
beside this file, so that tests see what ran, where and when.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from gopherq import GopherQ, Reject, SoftTimeLimitExceeded, current_task

app = GopherQ("e2e")
EVENTS = Path(__file__).with_name("events.log")


def note(event: str, *details: Any) -> None:
    line = json.dumps([time.time(), os.getpid(), event, *details]) + "\n"
    with EVENTS.open("a") as log:  # one small O_APPEND write: whole lines
        log.write(line)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0.01)
    return x + y


@app.task(retries=3, retry_delay=0.2, backoff="exponential", jitter=False)
def flaky() -> None:
    note("flaky", current_task().attempt)
    raise ValueError("boom")


@app.task
def fails() -> None:
    raise RuntimeError("no retries")


@app.task(retries=3)
def rejects() -> None:
    raise Reject("not for me")


@app.task
def mark(label: str) -> str:
    note("mark", label)
    return label


@app.task
def nap(seconds: float, label: str = "") -> str:
    note("start", label)
    time.sleep(seconds)
    note("end", label)
    return label


@app.task
def suicide() -> None:
    note("suicide")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(timeout=0.5, retries=1, retry_delay=0.1, jitter=False)
def hang() -> None:
    note("hang")
    time.sleep(30)


@app.task(soft_timeout=0.2)
def soft() -> str:
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "slept"


@app.task(retries=2, retry_delay=0.1, jitter=False)
def twice() -> int:
    """Fails on its first two attempts, then returns its attempt."""
    attempt = current_task().attempt
    if attempt < 2:
        raise ValueError(f"attempt {attempt}")
    return attempt


@app.task
def steps(count: int, pause: float) -> list[int]:
    """Does ``count`` steps, saving each in a checkpoint; returns where each run began."""
    task = current_task()
    state = task.checkpoint_state or {"done": 0, "starts": []}
    state["starts"].append(state["done"])
    while state["done"] < count:
        time.sleep(pause)
        state["done"] += 1
        task.checkpoint(state)
        task.progress(state["done"], count, "stepping")
        note("step", state["done"])
    return list(state["starts"])


@app.task
def patient(seconds: float) -> str:
    """Works in small steps for ``seconds``, stopping early when cancelled."""
    note("patient-start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if current_task().cancelled:
            note("patient-stopped")
            return "stopped"
        time.sleep(0.01)
    return "done"


@app.task
def touch(name: str) -> str:
    """Creates the marker file ``name`` beside this module: proof that it ran."""
    Path(__file__).with_name(name).touch()
    note("touch", name)
    return name


@app.task
def describe(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Its arguments back, with the Python type each arrived as: what a producer in
    another language checks (tests/e2e/node)."""
    return {
        "args": list(args),
        "kwargs": kwargs,
        "types": [_kind(a) for a in args],
        "kwtypes": {k: _kind(v) for k, v in kwargs.items()},
    }


def _kind(value: Any) -> str:
    """A value's type name; an aware datetime's with its UTC offset."""
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return "datetime" + value.strftime("%z")
    return type(value).__name__


@app.task(concurrency=2)
def limited(seconds: float) -> None:
    """At most 2 at once anywhere: notes its start and end (their order in events.log
    is the order they happened)."""
    note("limited-start")
    time.sleep(seconds)
    note("limited-end")


@app.task(concurrency=1)
def single(marker: str | None = None) -> str:
    """At most 1 at once anywhere. With ``marker``: the first run (no marker file yet)
    creates it and holds its slot for a minute; any run after returns at once."""
    note("single", marker)
    if marker is not None and not Path(__file__).with_name(marker).exists():
        Path(__file__).with_name(marker).touch()
        time.sleep(60)
    return "done"


@app.task(fair_key="tenant")
def tenant_work(tenant: str, n: int) -> None:
    note("tenant", tenant, n)
