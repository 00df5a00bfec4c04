"""End to end: ``gopherq worker -B`` runs the beat inside the worker, and stops with it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import stop, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

APP = """
import os
from pathlib import Path

from gopherq import GopherQ

app = GopherQ("worker-beat", task_routes={"ticks.*": {"queue": "ticks"}})
TICKS = Path(__file__).with_name("ticks.log")


@app.periodic(every=1)
@app.task(name="ticks.tick")
def tick() -> None:
    with TICKS.open("a") as log:
        log.write(f"{os.getpid()}\\n")
"""


def test_worker_with_beat_runs_periodic_tasks_and_stops_with_it(tmp_path: Path) -> None:
    (tmp_path / "tickapp.py").write_text(APP)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    environ["GOPHERQ_BROKER_URL"] = f"sqlite:///{tmp_path / 'gopherq.db'}"
    environ["GOPHERQ_BEAT_LEASE_SECONDS"] = "2"
    log_path = tmp_path / "worker.log"
    ticks = tmp_path / "ticks.log"

    def log() -> str:
        return log_path.read_text()

    with log_path.open("wb") as out:
        # No -Q: the routed queue "ticks" is consumed because a task is routed there.
        process = subprocess.Popen(
            [sys.executable, "-m", "gopherq", "worker", "-A", "tickapp", "-B", "-c", "1"],
            cwd=tmp_path,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(lambda: ticks.exists() and len(ticks.read_text().split()) >= 3, 40, log)
            assert "for development" in log()
            # A beat process that dies is replaced; the new one leads once the lease lapses.
            beat_pid = int(re.findall(r"beat beat@[^:]+:(\d+):", log())[0])
            os.kill(beat_pid, signal.SIGKILL)
            wait_for(lambda: "beat process died" in log(), 20, log)
            seen = len(ticks.read_text().split())
            wait_for(lambda: len(ticks.read_text().split()) >= seen + 2, 40, log)
            assert stop(process, timeout=30) == 0, log()
            # Nothing of the worker is left in its process group: the beat stopped too.
            with pytest.raises(ProcessLookupError):
                os.killpg(process.pid, 0)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    text = log()
    assert "leading" in text, text
    assert "beat" in text and "stopped" in text, text
    assert "Traceback" not in text, text
