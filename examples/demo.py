"""gopherq in one run: a real worker, tasks of every kind, results as they come.

::

    pip install -e . && python examples/demo.py

It starts ``gopherq worker -A app -c 2`` in this directory on a fresh SQLite
file (in a temporary directory unless ``--db`` names one), sends emails, math,
an image resize, a task that fails twice before it succeeds and an ``async``
fetch, cancels a scheduled email and a long report once it is running, prints
each outcome as it comes, then stops the worker with SIGTERM, which lets
running tasks finish first.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gopherq import State

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="SQLite file to use (default: a temporary one)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gopherq-demo-") as tmp:
        db = (options.db or Path(tmp) / "gopherq.db").resolve()
        os.environ["GOPHERQ_BROKER_URL"] = f"sqlite:///{db}"
        print(f"broker: sqlite:///{db}")
        worker = subprocess.Popen(
            [sys.executable, "-m", "gopherq", "worker", "-A", "app", "-c", "2", "-l", "ERROR"],
            cwd=HERE,
        )
        try:
            finished = run_tasks(worker)
        finally:
            code = stop(worker)
        print(f"worker stopped (exit code {code})")
        return 0 if finished and code == 0 else 1


def stop(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM: running tasks finish, then the worker exits. Kill it if it hangs."""
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


def run_tasks(worker: subprocess.Popen[bytes]) -> bool:
    """Send tasks of every kind and print each outcome; True if all succeeded."""
    from app import add, app, build_report, fetch, fibonacci, flaky, resize_image, send_email

    started = time.monotonic()
    pending: dict[str, Any] = {
        f"send_email({to!r})": send_email.delay(to, "Welcome!", "Thanks for signing up.")
        for to in ("ada@example.com", "grace@example.com", "linus@example.com")
    }
    # A batch: one broker call, one SQLite transaction.
    batch = [add.s(2, 3), add.s(10.5, 0.25), fibonacci.s(30), fibonacci.s(90)]
    labels = ["add(2, 3)", "add(10.5, 0.25)", "fibonacci(30)", "fibonacci(90)"]
    pending.update(zip(labels, app.send_many(batch), strict=True))
    pending["resize_image(160, 120, 0.5)"] = resize_image.delay(160, 120, 0.5)
    pending["resize_image(64, 48, 2.0)"] = resize_image.delay(64, 48, 2.0)
    pending["flaky(failures=2)"] = flaky.delay(2)
    for url in ("https://example.com/", "https://example.org/status"):
        pending[f"fetch({url!r})"] = fetch.delay(url)
    # Cancelled: a scheduled email at once, a long report once it has started.
    reminder = send_email.apply_async(("ada@example.com", "Reminder", "..."), countdown=60)
    reminder.cancel()
    report = build_report.delay(10_000)  # about 100 s of work
    cancelled = {"send_email(countdown=60)": reminder, "build_report(10_000)": report}
    pending.update(cancelled)
    print(f"sent {len(pending)} tasks; waiting for results\n")

    succeeded, stop_asked = True, False
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        if worker.poll() is not None:
            print(f"the worker exited early with code {worker.returncode}")
            return False
        progress = None if stop_asked else report.progress
        if progress is not None and progress.done >= 20:
            stop_asked = report.cancel()  # it sees current_task().cancelled, returns early
        for label, result in list(pending.items()):
            if not result.ready():
                continue
            del pending[label]
            elapsed = (time.monotonic() - started) * 1000
            if result.successful():
                print(f"{elapsed:7.0f} ms  {label:<36} -> {result.get()!r}")
            elif label in cancelled and result.state is State.CANCELLED:
                print(f"{elapsed:7.0f} ms  {label:<36} -- {result.get(propagate=False)}")
            else:
                succeeded = False
                print(f"{elapsed:7.0f} ms  {label:<36} !! {result.get(propagate=False)}")
        time.sleep(0.02)
    for label in pending:
        succeeded = False
        print(f"  timed out  {label}")
    print()
    return succeeded


if __name__ == "__main__":
    sys.exit(main())
