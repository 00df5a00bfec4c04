"""Schemathesis over the OpenAPI document of an in-process API (memory broker, auth
off): no operation answers 5xx, and every answer matches the documented schema and
content type. Operations added later are covered without changing this file.

Event streams are asked for as one JSON page (``follow=false``, which a generated
``follow=true`` would otherwise override): a stream never ends by itself, and its
framing is tested in test_events.py and the end-to-end tests.
Long polls (a ``wait`` query parameter) wait at most ``LONGEST_WAIT``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

from gopherq import GopherQ  # noqa: E402
from gopherq.web import create_app  # noqa: E402
from gopherq.web.application import OPENAPI_URL  # noqa: E402

EXAMPLES = 25
"""Examples per operation: enough to find 5xx and schema drift, few enough that the
whole run stays well under a minute."""
LONGEST_WAIT = 0.1
"""Seconds a generated ``wait`` (long poll) is cut to."""
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def make_app() -> GopherQ:
    app = GopherQ("schemathesis", broker="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    return app


APP = make_app()
schema = schemathesis.openapi.from_asgi(OPENAPI_URL, create_app(APP, auth=False))


@pytest.fixture(autouse=True, scope="module")
def close_app() -> Iterator[None]:
    yield
    APP.close()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api(case: schemathesis.Case) -> None:
    query = dict(case.query or {})
    if case.path.endswith("/events") and case.method.upper() == "GET":
        query["follow"] = "false"
    if isinstance(query.get("wait"), (int, float)) and query["wait"] > LONGEST_WAIT:
        query["wait"] = LONGEST_WAIT  # long polls: the answer, not the wait, is under test
    if query or case.query is not None:
        case.query = query
    case.call_and_validate(checks=CHECKS)
