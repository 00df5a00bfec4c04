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

from gopherq import GopherQ, State
from gopherq.events import Event
from gopherq.results.base import ErrorInfo, JobRecord

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CHROMIUM = os.environ.get("GOPHERQ_CHROMIUM", "/usr/bin/chromium")
XSS_QUEUE = "<img src=x onerror=alert('xss')>"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "dashboard-screenshots"
WIDTHS = {"wide": 1280, "narrow": 390}

APP_MODULE = """
from gopherq import GopherQ, State
from gopherq.results.base import ErrorInfo, JobRecord

app = GopherQ("dashboard", broker={url!r})


@app.task
def add(x, y):
    return x + y


@app.task
def slow(steps, note=""):
    import time
    from gopherq import current_task

    for done in range(steps):
        current_task().progress(done, steps, "stepping")
        time.sleep(0.4)
    return steps
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
        self.directory = directory
        self.environ = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
        self.environ["PYTHONPATH"] = os.pathsep.join(
            [str(directory), str(Path(__file__).resolve().parents[2])]
            + [p for p in self.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        self.process = self.start("serve", "--host", "127.0.0.1", "--port", str(self.port))
        self.workers: list[subprocess.Popen[bytes]] = []
        wait_for(self.live, 30, f"gopherq serve to answer; its log:\n{self.log()}")

    def start(self, *command: str, log_name: str = "serve.log") -> subprocess.Popen[bytes]:
        """``gopherq COMMAND -A dashapp ...`` in the app's folder, logging to ``log_name``."""
        with (self.directory / log_name).open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "gopherq", command[0], "-A", "dashapp", *command[1:]],
                cwd=self.directory,
                env=self.environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_worker(self, *options: str) -> None:
        """A worker of one child (with ``options``), stopped with the server."""
        self.workers.append(self.start("worker", "-c", "1", *options, log_name="worker.log"))

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
        for process in [*self.workers, self.process]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


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

    # The charts follow too: a task that succeeds (as a worker reports it) is counted.
    def succeeded() -> str:
        return page.text_content("#charts .legend .succeeded") or ""

    before = succeeded()
    client_app.events.publish(
        [Event("task-succeeded", time.time(), "chart-job", "dashapp.add", "default", "w", 0)]
    )
    wait_for(lambda: succeeded() != before, 20, "the charts' live update")
    assert int(succeeded().split()[-1]) == int(before.split()[-1]) + 1

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

    # Every page of the navigation, and the 404 page.
    for path in ("/jobs", "/dead", "/schedules", "/workers"):
        assert page.goto(server.base + path).status == 200
        shoot(page, path.strip("/"))
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


def log_in(browser: Any, server: Server, client_app: GopherQ, role: str) -> tuple[Any, Any]:
    """A new page logged in with a key of ``role``, and the list its errors go to."""
    _, secret = client_app.access.create(f"{role}-key", role)
    page = browser.new_page(viewport={"width": WIDTHS["wide"], "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.base + "/login")
    page.fill("#key", secret)
    page.click("button[type=submit]")
    page.wait_for_url(server.base + "/")
    return page, errors


def kill(app: GopherQ, *args: Any, queue: str = "doomed") -> str:
    """Send ``dashapp.add(*args)`` to ``queue`` (where nothing else waits) and
    dead-letter it; its id."""
    sent = app.send_task("dashapp.add", list(args), queue=queue)
    [delivery] = app.broker.reserve([queue], 1, 0)
    assert delivery.id == sent.id
    assert app.broker.dead(delivery, "MAX_RETRIES", "error of " + sent.id)
    return sent.id


def test_jobs_appear_live_and_a_dead_job_is_retried(
    browser: Any, server: Server, client_app: GopherQ
) -> None:
    page, errors = log_in(browser, server, client_app, "operator")
    page.click("nav >> text=Jobs")
    page.wait_for_url(server.base + "/jobs")
    wait_for(lambda: "live" in page.text_content("#live-state"), 10, "the feed to open")
    sent = client_app.send_task("dashapp.add", (1, 2))
    client_app.events.flush()
    row = page.locator(f"tr[data-job='{sent.id}']")
    wait_for(lambda: row.count() == 1, 15, "the new job to show without a reload")
    assert "QUEUED" in row.text_content()
    shoot(page, "jobs-live")
    row.get_by_role("link").click()
    page.wait_for_url(server.base + f"/jobs/{sent.id}")
    assert page.text_content("#job-state") == "QUEUED"

    # Retry a dead job from the dead letters page: tick it, press Retry selected.
    dead = kill(client_app, 3, 4)
    page.goto(server.base + "/dead")
    shoot(page, "dead-letters")
    page.get_by_label(f"Select {dead}").check()
    page.get_by_role("button", name="Retry selected").click()
    page.wait_for_url(server.base + "/dead?done=retry%3A1")
    assert "Retried: 1." in page.text_content("[role=status]")
    assert client_app.broker.locate(dead) is State.QUEUED

    # And one from its job page.
    other = kill(client_app, 5, 6, queue="doomed-too")
    page.goto(server.base + f"/jobs/{other}")
    page.get_by_role("button", name="Retry job").click()
    page.wait_for_url(server.base + f"/jobs/{other}?done=requeued")
    assert client_app.broker.locate(other) is State.QUEUED
    assert errors == [], errors
    page.close()


def test_an_admin_adds_a_schedule(browser: Any, server: Server, client_app: GopherQ) -> None:
    page, errors = log_in(browser, server, client_app, "admin")
    page.goto(server.base + "/schedules")
    page.fill("#s-name", "nightly-sum")
    page.select_option("#s-task", "dashapp.add")
    page.fill("#s-every", "5m")
    page.fill("#s-args", "[1, 2]")
    page.get_by_role("button", name="Add schedule").click()
    page.wait_for_url(server.base + "/schedules?done=added")
    assert page.locator("tr[data-schedule=nightly-sum]").count() == 1
    assert [i.entry.name for i in client_app.schedules.list()] == ["nightly-sum"]
    shoot(page, "schedules")
    page.get_by_role("button", name="Pause nightly-sum").click()
    page.wait_for_url(server.base + "/schedules?done=paused")
    assert client_app.schedules.list()[0].paused
    assert errors == [], errors
    page.close()


def test_a_job_with_markup_in_its_args_and_error_runs_no_script(
    browser: Any, server: Server, client_app: GopherQ
) -> None:
    script, image = "<script>alert('args')</script>", "<img src=x onerror=alert('error')>"
    id = kill(client_app, script, image)
    client_app.backend.store(
        [
            JobRecord(
                id=id,
                task="dashapp.add",
                state=State.FAILED,
                created=time.time(),
                error=ErrorInfo("TypeError", image, "Traceback:\n  " + script),
                attempts=1,
            )
        ]
    )
    page, errors = log_in(browser, server, client_app, "viewer")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server.base + f"/jobs/{id}")
    assert script in page.text_content("#job-args") and image in page.text_content("#job-args")
    assert image in page.text_content("#job-error")
    assert script in page.text_content("#job-traceback")
    assert page.locator("img[src=x]").count() == 0
    assert page.get_by_role("button", name="Retry job").count() == 0  # a viewer
    shoot(page, "job")
    page.goto(server.base + "/dead")
    assert page.locator("img[src=x]").count() == 0

    # An unknown job is the 404 page.
    response = page.goto(server.base + "/jobs/no-such-job")
    assert response.status == 404 and page.text_content("h1") == "There is no such job."
    expected(errors, "404")
    assert dialogs == [] and errors == [], errors
    page.close()


def test_a_job_page_follows_its_job_until_it_succeeds(
    browser: Any, server: Server, client_app: GopherQ
) -> None:
    page, errors = log_in(browser, server, client_app, "operator")
    sent = client_app.send_task("dashapp.slow", (8,), {"note": "<b>bold</b>"})
    client_app.events.flush()
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    page.goto(server.base + f"/jobs/{sent.id}")
    assert page.text_content("#job-state") == "QUEUED"
    assert "8" in page.text_content("#job-args")
    assert "<b>bold</b>" in page.text_content("#job-kwargs")  # as text
    wait_for(lambda: "live" in page.text_content("#live-state"), 10, "the feed to open")

    # A worker in its own process runs it; the page follows without a reload.
    server.start_worker()
    state = lambda: page.text_content("#job-state")  # noqa: E731
    wait_for(lambda: state() in ("STARTED", "SUCCEEDED"), 30, "the job to start on the page")
    wait_for(
        lambda: state() == "SUCCEEDED" or page.locator("#progress").count() == 1,
        15,
        "the progress bar",
    )
    shoot(page, "job-running")
    wait_for(lambda: state() == "SUCCEEDED", 30, "the job to succeed on the page")
    wait_for(lambda: page.locator("#job-result").count() == 1, 10, "the result")
    assert page.text_content("#job-result").strip() == "8"
    events = page.locator("#timeline th").all_text_contents()
    wait_for(
        lambda: "task-succeeded" in page.locator("#timeline th").all_text_contents(),
        10,
        f"the timeline to show the end (it shows {events})",
    )
    timeline = page.locator("#timeline th").all_text_contents()
    assert timeline[0] == "task-enqueued" and "task-started" in timeline
    assert "task-progress" in timeline
    assert page.get_by_role("button", name="Cancel job").count() == 0  # finished
    wait_for(lambda: "finished" in page.text_content("#live-state"), 10, "the feed to stop")
    assert len(loads) == 1, loads  # the first load only: no reload
    assert errors == [], errors
    page.close()


LONG = "an-unbroken-value-" * 14
"""Longer than a phone is wide, with no space to wrap at."""

OVERFLOW = """() => {
  const root = document.documentElement;
  const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + "." + e.className;
  const all = [...document.querySelectorAll("body *")];
  const wide = all.filter((e) => e.getBoundingClientRect().right > root.clientWidth + 1);
  // Partly off the left edge: cut, not hidden (hidden ones are wholly off, or 1 px).
  const cut = all.filter((e) => {
    const box = e.getBoundingClientRect();
    return box.left < -1 && box.right > 1;
  });
  return {scroll: root.scrollWidth, client: root.clientWidth,
          wide: wide.slice(0, 5).map(name), cut: cut.slice(0, 5).map(name)};
}"""

SIDEWAYS = """() => [...document.querySelectorAll(".scroll")]
  .filter((box) => box.scrollWidth > box.clientWidth + 1)
  .map((box) => (box.querySelector("table") || box).getAttribute("aria-label")
    || box.querySelector("table")?.id || "a table")"""

NAV_LINKS = """() => [...document.querySelectorAll("nav a")].map((a) => {
  const box = a.getBoundingClientRect();
  const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  return {text: a.textContent, left: box.left, right: box.right, height: box.height,
          reachable: hit === a || a.contains(hit)};
})"""


def misfits(page: Any) -> list[str]:
    """What does not fit the page's width: a horizontal overflow of the document or
    of a table's box (its cells would hide off to the side), an element cut by the
    left edge, a navigation link off
    screen, under 20 pixels tall, or not what a tap on its middle reaches."""
    width = page.viewport_size["width"]
    found = page.evaluate(OVERFLOW)
    problems = [] if found["scroll"] <= found["client"] else [f"overflows: {found}"]
    problems += [f"cut at the left edge: {found['cut']}"] if found["cut"] else []
    problems += [f"scrolls sideways: {table}" for table in page.evaluate(SIDEWAYS)]
    for link in page.evaluate(NAV_LINKS):
        if not (link["left"] >= 0 and link["right"] <= width):
            problems.append(f"link off screen: {link}")
        if link["height"] < 20 or not link["reachable"]:
            problems.append(f"link hard to tap: {link}")
    return problems


def test_every_page_fits_1280_and_390_pixels_wide(
    browser: Any, server: Server, client_app: GopherQ
) -> None:
    # What tends to overflow: long unbroken names and values everywhere.
    queue = "reports-" + "q" * 60
    queued = client_app.send_task("dashapp.add", (LONG, 2), {LONG: LONG}, queue=queue).id
    dead = kill(client_app, LONG, 1, queue=queue + "-dead")
    client_app.schedules.add("nightly-" + "s" * 60, "dashapp.add", every=300, args=(LONG, 1))
    client_app.events.flush()
    server.start_worker("-Q", "idle-" + "w" * 40)  # for the workers page; runs nothing here
    paths = {
        "overview": "/",
        "queues": "/queues",
        "purge": f"/queues/{queue}/purge",
        "jobs": "/jobs",
        "job": f"/jobs/{queued}",
        "dead": "/dead",
        "dead-letter": f"/dead/{dead}",
        "schedules": "/schedules",
        "workers": "/workers",
    }
    page, errors = log_in(browser, server, client_app, "admin")
    wait_for(
        lambda: page.goto(server.base + "/workers") and page.locator("tbody tr").count() > 0,
        30,
        "the worker to show",
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: dict[str, list[str]] = {}
    for name, path in paths.items():
        assert page.goto(server.base + path).status == 200, path
        for label, width in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": 900})
            problems[f"{name} at {width}"] = misfits(page)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        page.set_viewport_size({"width": WIDTHS["wide"], "height": 900})
    page.set_viewport_size({"width": WIDTHS["narrow"], "height": 900})
    # The navigation takes a phone's tap to the page it names.
    page.get_by_role("link", name="Dead letters").click()
    page.wait_for_url(server.base + "/dead")
    assert errors == [], errors
    page.close()
    login = browser.new_page(viewport={"width": WIDTHS["narrow"], "height": 900})
    login.goto(server.base + "/login")
    problems["login at 390"] = misfits(login)
    login.close()
    assert {where: found for where, found in problems.items() if found} == {}
