"""Faults of a SQLite broker under real workers: a full disk, a held write lock."""

from __future__ import annotations

import contextlib
import errno
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger import open_fault_run, scaled, stop, wait_for

from gopherq import BrokerUnavailable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(90, 900))]


@contextlib.contextmanager
def small_disk(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``directory`` (root only), unmounted at the end."""
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full disk: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill_disk(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    block = b"\0" * 65536
    with path.open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        with contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 512)  # the last few blocks


def test_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with small_disk(tmp_path / "disk", f"{scaled(4, 32)}M") as disk:
        url = f"sqlite:///{disk / 'gopherq.db'}"
        with open_fault_run("sqlite", tmp_path, monkeypatch, url=url) as run:
            worker = run.worker("-c", "2")
            run.send_work(scaled(40, 300), "work", 0.05)
            run.wait_progress(5)
            run.fault()
            fill_disk(disk / "filler")
            with pytest.raises(BrokerUnavailable):  # "try later", not "broken"
                run.send_work(1, "work", 0.0, "x" * 200_000)
            time.sleep(2)  # the workers keep failing to settle, and keep their tasks
            assert worker.poll() is None, run.log()
            (disk / "filler").unlink()
            run.wait_drained()
            run.check("SQLite disk full", kills=0, recovery_bound=scaled(45, 120))
            assert stop(worker) == 0, run.log()


HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_write_lock_held_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_fault_run("sqlite", tmp_path, monkeypatch) as run:
        worker = run.worker("-c", "2")
        run.send_work(scaled(40, 1000), "work", 0.02)
        run.wait_progress(5)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(run.path / "gopherq.db"), "4"],
            stdout=subprocess.PIPE,
        )
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        run.fault()
        held = len(run.completed())
        assert holder.wait(15) == 0
        wait_for(lambda: len(run.completed()) > held, 30, run.log)
        assert worker.poll() is None, run.log()
        run.wait_drained()
        run.check("SQLite write lock held 4 s", kills=0, recovery_bound=scaled(30, 120))
        assert stop(worker) == 0, run.log()
