"""What the tests of the operator routes (dead letters, queues, schedules, workers)
share: clients holding a key of one role, and dead letters made to order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.access.roles import Role
from gopherq.brokers.base import Envelope
from gopherq.web import create_app
from gopherq.web.auth import Caller
from gopherq.web.state import ServerState


@dataclass(slots=True)
class RoleState(ServerState):
    """A server whose keys are role names: ``Bearer viewer`` is a viewer's key."""

    def authenticate(self, token: str) -> Caller | None:
        try:
            return Caller(token, Role.parse(token))
        except ValueError:
            return None


def role_client(app: GopherQ, role: Role | None) -> TestClient:
    """A client of ``app``'s API, auth on, with a key of ``role`` (None: no key)."""
    api = create_app(app)
    api.state.gopherq = RoleState(app)
    headers = {} if role is None else {"Authorization": f"Bearer {role.label}"}
    return TestClient(api, headers=headers)


def kill(
    app: GopherQ,
    task: str,
    *args: Any,
    queue: str = "default",
    reason: str = "MAX_RETRIES",
    key: str | None = None,
) -> str:
    """Send ``task`` to ``queue`` and dead-letter it with ``reason``; its id."""
    sent = app.send_task(task, list(args), queue=queue, key=key)
    [delivery] = app.broker.reserve([queue], 1, 0)
    assert delivery.id == sent.id
    assert app.broker.dead(delivery, reason, f"error of {sent.id}")
    return sent.id


def kill_raw(app: GopherQ, body: bytes, queue: str = "default") -> str:
    """Enqueue a body that is no message and dead-letter it (DECODE_ERROR); its id."""
    [id] = app.broker.enqueue([Envelope("01900000-0000-7000-8000-00000000dead", queue, 2, body)])
    [delivery] = app.broker.reserve([queue], 1, 0)
    assert app.broker.dead(delivery, "DECODE_ERROR", "not valid msgpack")
    return id


def add_name(app: GopherQ) -> str:
    """The registered name of the ``add`` task of the tests' app."""
    [name] = [n for n in app.tasks if n.endswith("add")]
    return name


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """The problem document of ``response``, checked: its status, its media type, and
    (given ``field``) that the one field it names is ``field``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    if field is not None:
        assert [e["field"] for e in body["errors"]] == [field]
    return body
