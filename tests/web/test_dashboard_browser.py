"""The dashboard in a real browser: ``gopherq serve`` in a subprocess, driven by
Playwright through Debian's chromium (``/usr/bin/chromium``; Playwright never
downloads a browser). Skipped without chromium or playwright; fails instead in CI
(``GOPHERQ_REQUIRE_SERVICES=1``).

Screenshots of each page at 1280 and 390 pixels wide (and dark, at 390) go to
``build/dashboard-screenshots/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from services import free_port, unavailable

from gopherq import GopherQ

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CHROMIUM = os.environ.get("GOPHERQ_CHROMIUM", "/usr/bin/chromium")
XSS_QUEUE = "<img src=x onerror=alert('xss')>"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "dashboard-screenshots"
WIDTHS = {"wide": 1280, "narrow": 390}

APP_MODULE = """
from gopherq import GopherQ

app = GopherQ("dashboard", broker={url!r})


@app.task
def add(x, y):
    return x + y
"""


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    """``gopherq serve -A dashapp --port PORT`` on a SQLite broker in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.url_of_broker = f"sqlite:///{directory / 'broker.db'}"
        (directory / "dashapp.py").write_text(APP_MODULE.format(url=self.url_of_broker))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "serve.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
        environ["PYTHONPATH"] = os.pathsep.join(
            [str(directory), str(Path(__file__).resolve().parents[2])]
            + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        command = [sys.executable, "-m", "gopherq", "serve", "-A", "dashapp"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=directory,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.live, 30, f"gopherq serve to answer; its log:\n{self.log()}")

    def live(self) -> bool:
        assert self.process.poll() is None, self.log()
        try:
            with urllib.request.urlopen(self.base + "/live", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path)
    yield started
    started.close()


@pytest.fixture
def client_app(server: Server) -> Iterator[GopherQ]:
    """The same app as the server's, in the test process: keys, messages, broker state."""
    app = GopherQ("dashboard", broker=server.url_of_broker)
    yield app
    app.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install playwright)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def send(app: GopherQ, queue: str = "default") -> None:
    app.send_task("dashapp.add", (1, 2), queue=queue)


def stats(app: GopherQ, queue: str = "default") -> Any:
    return app.broker.stats().get(queue)


def expected(errors: list[str], status: str) -> None:
    """Drop the console's report of a response whose status the test asked for."""
    errors[:] = [e for e in errors if not (e.startswith("Failed to load") and status in e)]


def shoot(page: Any, name: str) -> None:
    """Screenshots of the page at both widths."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(SCREENSHOTS / f"{name}-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": WIDTHS["wide"], "height": 900})


def test_log_in_watch_pause_resume_and_purge(
    browser: Any, server: Server, client_app: GopherQ
) -> None:
    send(client_app)
    send(client_app, XSS_QUEUE)
    _, secret = client_app.access.create("ops", "operator")
    errors: list[str] = []
    dialogs: list[str] = []
    context = browser.new_context(viewport={"width": WIDTHS["wide"], "height": 900})
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # Login: a bad key is refused with a message, a good one opens the overview.
    response = page.goto(server.base + "/")
    assert page.url == server.base + "/login"
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    shoot(page, "login")
    page.fill("#key", "gq_not_a_key")
    page.click("button[type=submit]")
    assert "not valid" in page.text_content("#login-message")
    expected(errors, "401")
    page.fill("#key", secret)
    page.click("button[type=submit]")
    page.wait_for_url(server.base + "/")
    assert page.text_content("h1") == "Overview"
    cookie = next(c for c in context.cookies() if c["name"] == "gopherq_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and secret not in cookie["value"]

    # The queue named with markup shows as text; no element, no dialog.
    row = page.locator("#depths tr", has_text=XSS_QUEUE)
    assert row.count() == 1
    assert page.locator("img[src=x]").count() == 0
    shoot(page, "overview")

    # Live: a message sent from Python shows without a reload.
    assert page.text_content("#total-ready") == "2"
    send(client_app)
    # (Polled from Python: the page's CSP forbids the eval of wait_for_function.)
    wait_for(lambda: page.text_content("#total-ready") == "3", 15, "the live update")
    assert page.locator("#depths tr", has_text=XSS_QUEUE).count() == 1
    assert page.locator("img[src=x]").count() == 0

    # Queues: pause and resume by clicking; the broker follows.
    page.click("nav >> text=Queues")
    page.wait_for_url(server.base + "/queues")
    shoot(page, "queues")
    page.get_by_role("button", name="Pause default").click()
    page.wait_for_url(server.base + "/queues")
    wait_for(lambda: stats(client_app).paused, 5, "the queue to pause")
    assert page.get_by_role("button", name="Resume default").is_visible()
    page.get_by_role("button", name="Resume default").click()
    page.wait_for_url(server.base + "/queues")
    wait_for(lambda: not stats(client_app).paused, 5, "the queue to resume")

    # Purge asks first, on a page of its own.
    page.get_by_role("link", name="Purge default").click()
    page.wait_for_url(server.base + "/queues/default/purge")
    assert stats(client_app).ready == 2
    shoot(page, "purge")
    page.get_by_role("button", name="Purge default").click()
    page.wait_for_url(server.base + "/queues")
    assert stats(client_app) is None or stats(client_app).ready == 0

    # Keyboard: the queue rows take the focus.
    page.focus("#queue-1")
    assert page.evaluate("document.activeElement.id") == "queue-1"

    # The pages not built yet, and the 404 page.
    for path in ("/jobs", "/dead", "/schedules", "/workers"):
        assert page.goto(server.base + path).status == 200
    response = page.goto(server.base + "/no-such-page")
    assert response.status == 404 and "no such page" in page.text_content("h1")
    expected(errors, "404")
    shoot(page, "not-found")

    assert dialogs == []
    assert errors == [], errors
    context.close()


def test_a_viewer_has_no_buttons(browser: Any, server: Server, client_app: GopherQ) -> None:
    send(client_app)
    _, secret = client_app.access.create("watcher", "viewer")
    page = browser.new_page()
    page.goto(server.base + "/login")
    page.fill("#key", secret)
    page.click("button[type=submit]")
    page.wait_for_url(server.base + "/")
    page.goto(server.base + "/queues")
    assert page.locator("tr[data-queue=default]").count() == 1
    assert page.get_by_role("button", name="Pause default").count() == 0
    assert page.get_by_role("link", name="Purge default").count() == 0
    page.close()
