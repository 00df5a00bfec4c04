"""Fixtures of the HTTP API tests: an app on the memory broker and a client for it.

``api`` answers in-process (httpx over ASGI, no socket); the tests against a real
``gopherq serve`` subprocess start one themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'gopherq[web]'")

from fastapi.testclient import TestClient

from gopherq import GopherQ
from gopherq.web import create_app


@pytest.fixture
def app() -> Iterator[GopherQ]:
    app = GopherQ("webtest", broker="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    yield app
    app.close()


@pytest.fixture
def api(app: GopherQ) -> Iterator[TestClient]:
    """A client of ``app``'s API with auth off (an anonymous admin)."""
    with TestClient(create_app(app, auth=False)) as client:
        yield client
