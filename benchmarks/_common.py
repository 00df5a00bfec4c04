"""What the benchmark scripts share: worker processes, a private Redis, percentiles,
memory, tables."""

from __future__ import annotations

import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start_gopherq_worker(
    module: str, concurrency: int, queue: str, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``python -m gopherq worker -A module -c N -Q queue *extra`` in this directory."""
    argv = [sys.executable, "-m", "gopherq", "worker", "-A", module, "-l", "WARNING"]
    return subprocess.Popen([*argv, "-c", str(concurrency), "-Q", queue, *extra], cwd=HERE)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def redis_url(url: str | None, db: int = 13) -> Iterator[str]:
    """``url`` if one is given; else start a private ``redis-server`` for the run, on a
    free loopback port with no persistence, yield ``redis://127.0.0.1:PORT/db`` and
    stop it at the end. A benchmark so never writes to a Redis that others use."""
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH: install it, or pass --url")
    import redis

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gqbench-redis-") as folder:
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder]
        argv += ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"redis-server on port {port} did not start") from None
                    time.sleep(0.02)
            client.close()
            yield f"redis://127.0.0.1:{port}/{db}"
        finally:
            server.terminate()
            server.wait(timeout=30)


@contextmanager
def fresh_broker(kind: str, url: str | None, prefix: str, db: int = 13) -> Iterator[str]:
    """The URL of a fresh broker of ``kind``: a SQLite file in a temporary directory,
    or Redis (``redis_url``) under the key ``prefix``; a Redis given by ``url`` is
    cleaned of the run's keys at the end (SCAN and DEL, never FLUSHDB)."""
    if kind != "redis":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as folder:
            yield f"sqlite:///{Path(folder) / 'gopherq.db'}"
        return
    with redis_url(url, db=db) as found:
        try:
            yield found + f"?prefix={prefix}"
        finally:
            if url is not None:  # someone else's Redis: take back every key written
                import redis

                client = redis.Redis.from_url(found)
                for key in client.scan_iter(f"{prefix}:*", count=10_000):
                    client.delete(key)
                client.close()


def database(url: str, db: int) -> str:
    """``url`` with its Redis database number replaced by ``db``."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


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


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process and its children have used so far."""
    import psutil  # type: ignore[import-untyped]

    process = psutil.Process(pid)
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        times = each.cpu_times()
        total += times.user + times.system
    return total


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
