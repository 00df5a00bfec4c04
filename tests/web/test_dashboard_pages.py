"""The dashboard's jobs, dead letters, schedules and workers pages, in-process."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gopherq import GopherQ, State
from gopherq.events import Event
from gopherq.results.base import ErrorInfo, JobRecord, Progress
from gopherq.web import create_app
from web.ops_support import add_name, kill
from web.test_dashboard import XSS, _audit, csrf, login

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def server(app: GopherQ) -> Iterator[TestClient]:
    """The dashboard with auth on; each test logs in with the role it needs."""
    with TestClient(create_app(app)) as client:
        yield client


def store(app: GopherQ, id: str, state: State = State.SUCCEEDED, **fields: object) -> None:
    record = JobRecord(id=id, task=add_name(app), state=state, created=time.time(), **fields)  # type: ignore[arg-type]
    app.backend.store([record])


def ids_on(page: str) -> list[str]:
    return re.findall(r'data-job="([^"]+)"', page)


# Jobs.


def test_the_jobs_list_filters_and_pages_with_the_cursor(api: TestClient, app: GopherQ) -> None:
    for n in range(60):
        store(app, f"job-{n:03}", State.FAILED if n % 2 else State.SUCCEEDED)
    page = api.get("/jobs").text
    assert len(ids_on(page)) == 50 and ids_on(page)[0] == "job-059"
    following = re.search(r'href="/jobs(\?[^"]+)" rel="next"', page)
    assert following is not None
    assert 'data-live="/live/events"' in page  # the first page follows new jobs
    rest = api.get("/jobs" + following.group(1).replace("&amp;", "&")).text
    assert len(ids_on(rest)) == 10 and "First page" in rest
    assert "data-live" not in rest
    failed = ids_on(api.get("/jobs", params={"state": "FAILED"}).text)
    assert len(failed) == 30 and all(int(i[-3:]) % 2 for i in failed)
    assert ids_on(api.get("/jobs", params={"task": "nope"}).text) == []
    assert len(ids_on(api.get("/jobs", params={"queue": "default", "within": "1h"}).text)) == 50
    assert api.get("/jobs", params={"state": "BOGUS"}).status_code == 422
    assert api.get("/jobs", params={"cursor": "!!"}).status_code == 422
    response = api.get("/jobs", params={"id": "job-001"}, follow_redirects=False)
    assert response.headers["location"] == "/jobs/job-001"


def test_a_job_page_shows_error_progress_checkpoint_and_events_escaped(
    api: TestClient, app: GopherQ
) -> None:
    store(
        app,
        "j1",
        State.FAILED,
        error=ErrorInfo("ValueError", XSS, "Traceback:\n  " + SCRIPT),
        attempts=3,
        progress=Progress(3, 4, SCRIPT),
        checkpoint=app.codec.pack({"at": SCRIPT}),
    )
    app.events.publish([Event("task-failed", time.time(), "j1", add_name(app), "default")])
    app.events.flush()
    page = api.get("/jobs/j1").text
    assert XSS not in page and SCRIPT not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;" in page
    assert '<progress id="progress" max="100" value="75">' in page
    assert "task-failed" in page and 'id="job-checkpoint"' in page
    assert "Retry job" not in page and "Cancel job" not in page  # not dead, finished


def test_a_job_page_shows_the_arguments_of_a_waiting_or_running_job(
    api: TestClient, app: GopherQ
) -> None:
    queued = app.send_task(add_name(app), [SCRIPT], {"y": 2}).id
    scheduled = app.send_task(add_name(app), [5, 6], countdown=600).id
    page = api.get(f"/jobs/{queued}").text
    args = re.search(r'<pre id="job-args">(.*?)</pre>', page, re.S)
    assert args is not None and "&lt;script&gt;alert(1)&lt;/script&gt;" in args.group(1)
    assert SCRIPT not in page and '"y": 2' in page.replace("&#34;", '"')
    assert f'data-live="/live/events?job={queued}"' in page  # it follows the job
    assert "5,\n  6" in api.get(f"/jobs/{scheduled}").text
    [running] = app.broker.reserve(["default"], 1, 0)
    page = api.get(f"/jobs/{running.id}").text
    assert "STARTED" in page and 'id="job-args"' in page
    store(app, running.id, State.SUCCEEDED, result=app.codec.pack(3))
    app.broker.ack([running])
    page = api.get(f"/jobs/{running.id}").text
    assert 'id="job-args"' not in page and "kept while its message waits" in page
    assert "data-live" not in page  # finished: nothing more to follow


def test_an_operator_cancels_a_queued_job(server: TestClient, app: GopherQ) -> None:
    sent = app.send_task(add_name(app), [1, 2])
    login(server, app, "operator")
    page = server.get(f"/jobs/{sent.id}").text
    assert "Cancel job" in page
    response = server.post(
        f"/jobs/{sent.id}/cancel", data={"csrf": csrf(page)}, follow_redirects=False
    )
    assert response.headers["location"] == f"/jobs/{sent.id}?done=cancelled"
    assert app.broker.locate(sent.id) is None
    again = server.post(f"/jobs/{sent.id}/cancel", data={"csrf": csrf(page)})
    assert again.status_code in (404, 409)


def test_a_dead_job_shows_its_arguments_and_is_retried(server: TestClient, app: GopherQ) -> None:
    id = kill(app, add_name(app), SCRIPT, 2)
    login(server, app, "operator")
    page = server.get(f"/jobs/{id}").text
    assert "Retry job" in page and SCRIPT not in page and "&lt;script&gt;" in page
    response = server.post(f"/jobs/{id}/retry", data={"csrf": csrf(page)}, follow_redirects=False)
    assert response.status_code == 303 and app.broker.locate(id) is State.QUEUED
    assert server.post(f"/jobs/{id}/retry", data={"csrf": csrf(page)}).status_code == 409
    assert [e.action for e in _audit(app, 2)][-2:] == ["jobs.retry", "jobs.retry"]


def test_a_viewer_cannot_cancel_or_retry(server: TestClient, app: GopherQ) -> None:
    id = kill(app, add_name(app), 1, 2)
    login(server, app, "viewer")
    page = server.get(f"/jobs/{id}").text
    assert "Retry job" not in page
    assert server.post(f"/jobs/{id}/retry", data={"csrf": csrf(page)}).status_code == 403
    assert app.broker.locate(id) is State.DEAD


def test_an_unknown_job_is_the_404_page(api: TestClient) -> None:
    for id in ("no-such-job", "x" * 500):
        response = api.get(f"/jobs/{id}", headers={"Accept": "text/html"})
        assert response.status_code == 404 and "There is no such job." in response.text
        assert response.headers["content-type"].startswith("text/html")


# Dead letters.


def test_dead_letters_by_reason_and_bulk_retry_of_a_selection(
    api: TestClient, app: GopherQ
) -> None:
    name = add_name(app)
    a, b = kill(app, name, 1, 2), kill(app, name, 3, 4)
    c = kill(app, name, 5, 6, reason="EXPIRED")
    page = api.get("/dead").text
    assert "MAX_RETRIES" in page and "EXPIRED" in page
    assert re.findall(r'data-dead="([^"]+)"', api.get("/dead?reason=EXPIRED").text) == [c]
    token = csrf(page)
    response = api.post(
        "/dead/retry",
        content=f"csrf={token}&scope=selection&id={a}&id={b}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and "Retried: 2." in response.text
    assert app.broker.locate(a) is State.QUEUED and app.broker.locate(c) is State.DEAD
    assert api.post("/dead/retry", data={"csrf": token, "scope": "selection"}).status_code == 422


def test_purge_of_a_filter_asks_for_confirmation(api: TestClient, app: GopherQ) -> None:
    name = add_name(app)
    keep, gone = kill(app, name, 1, 2), kill(app, name, 3, 4, reason="EXPIRED")
    token = csrf(api.get("/dead").text)
    fields = {"csrf": token, "scope": "filter", "reason": "EXPIRED"}
    assert api.post("/dead/purge", data=fields).status_code == 422
    assert app.broker.locate(gone) is State.DEAD
    response = api.post("/dead/purge", data=fields | {"confirm": "yes"})
    assert "Purged: 1." in response.text
    assert app.broker.locate(gone) is None and app.broker.locate(keep) is State.DEAD


def test_edit_then_replay(api: TestClient, app: GopherQ) -> None:
    id = kill(app, add_name(app), 1, 2)
    page = api.get(f"/dead/{id}").text
    assert "[\n  1,\n  2\n]" in page
    token = csrf(page)
    bad = api.post(f"/dead/{id}/replay", data={"csrf": token, "args": "[1, 2, 3]"})
    assert bad.status_code == 422 and "replay-message" in bad.text
    bad = api.post(f"/dead/{id}/replay", data={"csrf": token, "args": "{"})
    assert bad.status_code == 422 and "not valid JSON" in bad.text
    response = api.post(
        f"/dead/{id}/replay", data={"csrf": token, "args": "[5, 6]"}, follow_redirects=False
    )
    new = response.headers["location"].rsplit("/", 1)[1]
    assert new != id and app.broker.locate(id) is None
    [delivery] = app.broker.reserve(["default"], 1, 0)
    assert app.codec.decode(delivery.body).args == [5, 6]
    assert api.get("/dead/nope", headers={"Accept": "text/html"}).status_code == 404


def test_dead_letter_actions_need_the_operator_role(server: TestClient, app: GopherQ) -> None:
    id = kill(app, add_name(app), 1, 2)
    login(server, app, "viewer")
    page = server.get("/dead").text
    assert "Retry selected" not in page and 'type="checkbox"' not in page
    token = csrf(page)
    for path in ("/dead/retry", "/dead/purge", f"/dead/{id}/replay"):
        assert server.post(path, data={"csrf": token, "id": id}).status_code == 403
    assert app.broker.locate(id) is State.DEAD


# Schedules and workers.


def test_an_admin_adds_pauses_resumes_and_removes_a_schedule(
    server: TestClient, app: GopherQ
) -> None:
    login(server, app, "admin")
    token = csrf(server.get("/schedules").text)
    fields = {"csrf": token, "name": "tick", "task": add_name(app), "every": "5m"}
    bad = server.post("/schedules/add", data=fields)
    assert bad.status_code == 422 and "schedule-message" in bad.text
    page = server.post("/schedules/add", data=fields | {"args": "[1, 2]"}).text
    assert 'data-schedule="tick"' in page and "every 5m" in page
    assert [i.entry.name for i in app.schedules.list()] == ["tick"]
    server.post("/schedules/tick/pause", data={"csrf": token})
    assert app.schedules.list()[0].paused
    server.post("/schedules/tick/resume", data={"csrf": token})
    assert not app.schedules.list()[0].paused
    server.post("/schedules/tick/remove", data={"csrf": token})
    assert app.schedules.list() == []
    assert server.post("/schedules/tick/pause", data={"csrf": token}).status_code == 404


def test_schedule_changes_need_the_admin_role(server: TestClient, app: GopherQ) -> None:
    app.schedules.add("tick", add_name(app), every=60, args=[1, 2])
    login(server, app, "operator")
    page = server.get("/schedules").text
    assert 'data-schedule="tick"' in page and "Add a schedule" not in page
    assert "Pause tick" not in page
    response = server.post("/schedules/tick/remove", data={"csrf": csrf(page)})
    assert response.status_code == 403 and len(app.schedules.list()) == 1


def test_the_workers_page_lists_workers_from_their_events(api: TestClient, app: GopherQ) -> None:
    now = time.time()
    app.events.publish(
        [
            Event("worker-online", now, worker=f"{XSS}:42", extra={"concurrency": 2}),
            Event("worker-heartbeat", now, worker=f"{XSS}:42", extra={"processed": 7}),
        ]
    )
    page = api.get("/workers").text
    assert XSS not in page and "&lt;img" in page
    assert 'data-label="Pid" class="num">42<' in page


# The live feed.


def test_the_live_feed_is_the_api_stream_for_the_cookie_session(app: GopherQ) -> None:
    from web.test_events import publish, read_stream

    api = create_app(app)
    with TestClient(api) as client:
        response = client.get("/live/events", follow_redirects=False)
        assert response.status_code == 401  # a script reads it: no redirect to the login
        assert client.get("/api/v1/events").status_code == 401  # the API still wants a key
        login(client, app, "viewer")
        publish(app, 2)
        stream = [m for m in read_stream(api, client, "/live/events?since=0") if m.data]
        assert [m.event["id"] for m in stream] == ["job0", "job1"]
        resumed = read_stream(api, client, "/live/events", **{"Last-Event-ID": stream[0].id})
        assert [m.event["id"] for m in resumed if m.data] == ["job1"]
        filtered = read_stream(api, client, "/live/events?since=0&job=job1")
        assert [m.event["id"] for m in filtered if m.data] == ["job1"]
        assert client.get("/live/events?types=nope").status_code == 422


# The overview's charts.


def test_the_overview_charts_the_last_hour_from_the_event_store(
    api: TestClient, app: GopherQ
) -> None:
    from gopherq.web.ui import charts

    now = time.time()
    kinds = ["task-succeeded"] * 3 + ["task-failed"] + ["task-retried"]
    events = [Event(kind, now - 60, f"j{i}", "t", "q") for i, kind in enumerate(kinds)]
    events.append(Event("task-failed", now - 7200, "old", "t", "q"))  # outside the hour
    app.events.publish(events)
    drawn = charts.charts(app, now)
    assert dict(drawn.totals) == {"succeeded": 3, "failed": 1, "retried": 1}
    assert drawn.peak == 5 and len(drawn.bars) == 3 and not drawn.truncated
    assert drawn.rates[-1][1] == 0.25 and drawn.rates[0][1] is None
    page = api.get("/").text
    assert '<svg class="chart" id="throughput-chart"' in page
    assert page.count('<rect class="') == 3 and '<polyline class="rate"' in page
    assert "<script" not in page.replace('<script src="/static/live.js" defer></script>', "")


def test_the_chart_read_is_bounded(app: GopherQ, monkeypatch: pytest.MonkeyPatch) -> None:
    from gopherq.web.ui import charts

    monkeypatch.setattr(charts, "READ_LIMIT", 4)
    now = time.time()
    app.events.publish([Event("task-succeeded", now - 10, f"j{i}", "t", "q") for i in range(9)])
    drawn = charts.charts(app, now)
    assert dict(drawn.totals)["succeeded"] == 4 and drawn.truncated


def test_result_notes_show_only_what_an_action_did(api: TestClient) -> None:
    for path in ("/dead?done=oops", "/dead?done=retry:x", "/schedules?done=<b>hacked</b>"):
        page = api.get(path)
        assert page.status_code == 200 and 'role="status"' not in page.text
    assert "Purged: 4." in api.get("/dead?done=purge:4").text


def test_the_new_pages_follow_a_mount_prefix(app: GopherQ) -> None:
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/gq", create_app(app, auth=False))
    id = kill(app, add_name(app), 1, 2)
    with TestClient(outer) as client:
        jobs = client.get("/gq/jobs").text
        assert 'data-live="/gq/live/events"' in jobs and 'action="/gq/jobs"' in jobs
        dead = client.get("/gq/dead").text
        assert f'href="/gq/dead/{id}"' in dead and 'formaction="/gq/dead/purge"' in dead
        response = client.post(
            "/gq/dead/retry", data={"csrf": csrf(dead), "id": id}, follow_redirects=False
        )
        assert response.headers["location"] == "/gq/dead?done=retry%3A1"
        assert client.get("/gq/live/events?types=nope").status_code == 422
