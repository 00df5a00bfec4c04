"""The app the e2e beats and workers run; copied into each test's directory as ``beatapp.py``.

Its periodic entries catch up every missed tick, so that a test can check that
no tick was lost or doubled across a leader change. ``stamp`` notes when it
started, for the ETA bound.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from gopherq import GopherQ, current_task

app = GopherQ("beat-e2e")
STAMPS = Path(__file__).with_name("stamps.log")


@app.periodic(every=1, catch_up="all")
@app.task(name="second")
def second() -> None: ...


@app.periodic(cron="*/2 * * * * *", catch_up="all")  # six fields: seconds first
@app.task(name="two_seconds")
def two_seconds() -> None: ...


@app.periodic(cron="* * * * *", catch_up="all")
@app.task(name="minute")
def minute() -> None: ...


@app.task(name="dyn")
def dyn() -> None: ...


@app.task(name="stamp")
def stamp(eta: float) -> None:
    started = time.time()
    with STAMPS.open("a") as log:
        log.write(json.dumps([current_task().id, eta, started]) + "\n")
