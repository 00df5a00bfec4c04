"""Take the README's dashboard screenshot (docs/images/dashboard-overview.png).

::

    python examples/demo.py --db /tmp/shot/gopherq.db   # some history to chart
    python docs/images/capture_dashboard.py /tmp/shot/gopherq.db

Serves ``examples/app.py`` on that SQLite file (``gopherq serve --no-auth``), leaves
a few jobs waiting in its queues, opens the overview at 1280 x 1100 in Debian's
chromium through Playwright, and writes the screenshot reduced to 64 colours
by ``pngquant`` (``apt-get install pngquant``) so that it stays small.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images" / "dashboard-overview.png"


def main(db: Path) -> None:
    env = {**os.environ, "GOPHERQ_BROKER_URL": f"sqlite:///{db.resolve()}", "PYTHONPATH": str(ROOT)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = subprocess.Popen(
        [sys.executable, "-m", "gopherq", "-A", "app", "serve", "--no-auth", "--port", str(port)],
        cwd=ROOT / "examples",
        env=env,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/live", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run([sys.executable, "-c", WAITING], cwd=ROOT / "examples", env=env, check=True)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(base + "/")
            for _ in range(50):  # the live feed opened, and the page settled
                if "live" in (page.text_content("#live-state") or ""):
                    break
                time.sleep(0.1)
            time.sleep(1.5)
            raw = Path(tmp) / "raw.png"
            page.screenshot(path=str(raw))
            browser.close()
            subprocess.run(
                ["pngquant", "--force", "--strip", "--output", str(OUT), "64", str(raw)],
                check=True,
            )
        print(f"{OUT}: {OUT.stat().st_size} bytes")
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(10)


WAITING = """
from app import add, send_email, resize_image
for n in range(12):
    add.delay(n, n)
for n in range(5):
    send_email.delay(f"user{n}@example.com", "Welcome", "Hello")
resize_image.apply_async((64, 48, 2.0), countdown=3600)
"""

if __name__ == "__main__":
    main(Path(sys.argv[1]))
