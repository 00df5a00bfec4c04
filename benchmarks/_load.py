"""A small HTTP/1.1 load generator for loopback: N keep-alive connections, a bounded
number of requests, each request's latency.

Raw asyncio streams rather than an HTTP client library: the generator shares the
machine's cores with the server it measures, so it should cost as little as
possible (``Load.client_cpu`` says what it cost). It speaks just enough HTTP for
the benchmark: requests it builds itself, responses with a ``Content-Length`` or
chunked, keep-alive throughout. Runs under uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MakeRequest = Callable[[int], bytes]
"""Builds the bytes of the ``i``-th request."""


def request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of one HTTP/1.1 request to the loopback server."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Load:
    """What one run measured."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    client_cpu: float = 0.0
    """CPU seconds this process spent during the run."""
    last_body: bytes = b""

    @property
    def rate(self) -> float:
        """Requests per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        """Responses outside 2xx."""
        return sum(count for status, count in self.statuses.items() if not 200 <= status < 300)


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return status, b"".join(parts)
    return status, await reader.readexactly(max(length, 0))


async def _run(port: int, make: MakeRequest, count: int, concurrency: int, load: Load) -> None:
    issued = iter(range(count))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in issued:
                data = make(i)
                start = time.perf_counter()
                writer.write(data)
                status, body = await _response(reader)
                load.latencies_ms.append((time.perf_counter() - start) * 1000)
                load.statuses[status] = load.statuses.get(status, 0) + 1
                load.last_body = body
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))


def run(port: int, make: MakeRequest, count: int, concurrency: int) -> Load:
    """Send ``count`` requests (``make(0)`` to ``make(count - 1)``) over ``concurrency``
    keep-alive connections to 127.0.0.1:``port``, each connection one request at a
    time, and time each one."""
    load = Load()
    start, cpu = time.perf_counter(), time.process_time()
    _loop_runner()(_run(port, make, count, concurrency, load))
    load.seconds = time.perf_counter() - start
    load.client_cpu = time.process_time() - cpu
    return load


def _loop_runner() -> Callable[..., None]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def loop_name() -> str:
    """The event loop ``run`` uses."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
