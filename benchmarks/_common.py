"""What the benchmark scripts share: worker processes, percentiles, memory, tables."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start_gopherq_worker(module: str, concurrency: int, queue: str) -> subprocess.Popen[bytes]:
    """``python -m gopherq worker -A module -c N -Q queue`` in this directory."""
    argv = [sys.executable, "-m", "gopherq", "worker", "-A", module, "-l", "WARNING"]
    return subprocess.Popen([*argv, "-c", str(concurrency), "-Q", queue], cwd=HERE)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def wait_until(
    done: Callable[[], bool],
    worker: subprocess.Popen[bytes],
    *,
    interval: float = 0.005,
    timeout: float = 600.0,
) -> float:
    """Poll ``done()`` every ``interval`` s until true; the ``perf_counter`` time it was seen.

    Raises ``SystemExit`` if the worker exits first or ``timeout`` passes.
    """
    deadline = time.perf_counter() + timeout
    while not done():
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with code {worker.returncode}")
        if time.perf_counter() > deadline:
            raise SystemExit(f"gave up waiting after {timeout:.0f} s")
        time.sleep(interval)
    return time.perf_counter()


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of already sorted values, nearest rank."""
    index = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of latencies in milliseconds."""
    ordered = sorted(latencies_ms)
    summary = {f"p{p}": percentile(ordered, p) for p in (50, 95, 99)}
    summary["mean"] = statistics.fmean(ordered)
    return summary


def time_calls(call: Callable[[], object], count: int) -> list[float]:
    """Run ``call()`` ``count`` times in a row; each call's duration in milliseconds."""
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    import psutil  # type: ignore[import-untyped]

    process = psutil.Process(pid)
    processes = [process, *process.children(recursive=True)]
    return float(sum(p.memory_info().rss for p in processes)) / 2**20


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under a header, the first column left-aligned and the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    )
