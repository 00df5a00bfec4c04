"""An example gopherq app: tasks of the kinds a web application sends to the background.

Run a worker for it from this directory::

    gopherq worker -A app -c 2

and send tasks from Python (``from app import add; add.delay(2, 3).get()``)
or from the shell (``gopherq -A app submit math.add --args '[2, 3]' --wait``).
The broker is ``gopherq.db`` beside this file unless ``GOPHERQ_BROKER_URL`` says otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import zlib

from gopherq import GopherQ, current_task

app = GopherQ("examples")


@app.task(name="email.send", queue="email", retries=3, backoff="exponential", timeout=30)
def send_email(to: str, subject: str, body: str) -> dict[str, str]:
    """Send an email (simulated: it takes a moment and returns a message id)."""
    if "@" not in to:
        raise ValueError(f"not an email address: {to!r}")
    time.sleep(random.uniform(0.02, 0.08))  # the SMTP round trip
    digest = hashlib.sha1(f"{to}\0{subject}\0{body}".encode()).hexdigest()[:16]
    return {"to": to, "message_id": f"<{digest}@example.com>"}


@app.task(name="math.add", queue="math")
def add(x: float, y: float) -> float:
    """Add two numbers."""
    return x + y


@app.task(name="math.fibonacci", queue="math")
def fibonacci(n: int) -> int:
    """The n-th Fibonacci number, for 0 <= n <= 93 (the ones that fit in 64 bits)."""
    if not 0 <= n <= 93:
        raise ValueError("n must be between 0 and 93: larger results do not fit in 64 bits")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@app.task(name="images.resize", priority="low", soft_timeout=20, timeout=30)
def resize_image(width: int, height: int, scale: float) -> dict[str, int | str]:
    """Generate a width x height RGB test image and resize it by scale.

    Pure Python bilinear interpolation: real pixel work, no imaging library.
    Returns the new size and a checksum of the pixels.
    """
    if width <= 0 or height <= 0 or not 0 < scale <= 8:
        raise ValueError("width and height must be positive and scale in (0, 8]")
    source = _test_image(width, height)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    pixels = _bilinear(source, width, height, new_width, new_height)
    return {
        "width": new_width,
        "height": new_height,
        "bytes": len(pixels),
        "crc32": f"{zlib.crc32(pixels):08x}",
    }


def _test_image(width: int, height: int) -> bytes:
    """An RGB gradient with a circle in the middle, row by row."""
    out = bytearray(width * height * 3)
    cx, cy, r2 = width / 2, height / 2, (min(width, height) / 3) ** 2
    for y in range(height):
        for x in range(width):
            i = (y * width + x) * 3
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= r2
            out[i] = 255 if inside else x * 255 // max(width - 1, 1)
            out[i + 1] = 64 if inside else y * 255 // max(height - 1, 1)
            out[i + 2] = 128
    return bytes(out)


def _bilinear(src: bytes, width: int, height: int, new_width: int, new_height: int) -> bytes:
    """Resize an RGB image with bilinear interpolation."""
    out = bytearray(new_width * new_height * 3)
    x_ratio = (width - 1) / max(new_width - 1, 1)
    y_ratio = (height - 1) / max(new_height - 1, 1)
    for y in range(new_height):
        sy = y * y_ratio
        y0 = int(sy)
        y1, fy = min(y0 + 1, height - 1), sy - y0
        for x in range(new_width):
            sx = x * x_ratio
            x0 = int(sx)
            x1, fx = min(x0 + 1, width - 1), sx - x0
            a, b = (y0 * width + x0) * 3, (y0 * width + x1) * 3
            c, d = (y1 * width + x0) * 3, (y1 * width + x1) * 3
            o = (y * new_width + x) * 3
            for ch in range(3):
                top = src[a + ch] + (src[b + ch] - src[a + ch]) * fx
                bottom = src[c + ch] + (src[d + ch] - src[c + ch]) * fx
                out[o + ch] = round(top + (bottom - top) * fy)
    return bytes(out)


@app.task(name="demo.flaky", retries=3, backoff="fixed", retry_delay=0.2, jitter=False)
def flaky(failures: int) -> str:
    """Fail the first `failures` runs, then succeed: the worker retries it."""
    attempt = current_task().attempt
    if attempt < failures:
        raise ConnectionError(f"upstream unavailable (attempt {attempt + 1})")
    return f"succeeded on attempt {attempt + 1}"


@app.task(name="http.fetch")
async def fetch(url: str) -> dict[str, int | str]:
    """Fetch a URL (simulated with asyncio.sleep): an async def task."""
    await asyncio.sleep(random.uniform(0.05, 0.15))
    return {"url": url, "status": 200, "bytes": 1024 + len(url) * 37}


@app.task(name="reports.build")
def build_report(rows: int) -> str:
    """A long task: reports progress, and stops early when it is cancelled."""
    task = current_task()
    for done in range(rows):
        if task.cancelled:
            return f"stopped after {done} rows"  # the job ends CANCELLED all the same
        time.sleep(0.01)  # one row's work
        task.progress(done + 1, rows, "rows")
    return f"{rows} rows"
