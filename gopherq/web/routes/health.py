"""Probes, health and metrics.

``/live`` and ``/ready`` answer anyone (orchestrators probe without keys, and
they tell nothing but "up" and which dependency is down). ``/api/v1/health``
says more (URLs, errors, workers) and needs a viewer key. ``/metrics`` serves
the gauges of ``gopherq exporter`` and also needs a viewer key: queue names
and depths are the deployment's data, and Prometheus sends a bearer token with
``authorization: {credentials_file: ...}`` in its scrape config.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from gopherq import admin
from gopherq.access.roles import Role
from gopherq.web.auth import require
from gopherq.web.responses import model_response
from gopherq.web.routing import api_router
from gopherq.web.state import AppDep, StateDep

probes = api_router("", tags=["health"])
router = api_router(tags=["health"])


class Status(BaseModel):
    """A probe's answer."""

    status: str = Field(description="`ok`, or `unavailable` (with status 503).")
    failing: list[str] = Field(
        default_factory=list, description="What does not answer: `broker`, `results`."
    )


class StoreHealth(BaseModel):
    """Whether a store answered, and how fast."""

    url: str = Field(description="The store's URL, any password hidden.")
    ok: bool
    latency: float = Field(description="Seconds the check took (or took to fail).")
    error: str = ""


class WorkersHealth(BaseModel):
    """Workers seen in the event log lately."""

    checked: bool = Field(description="False when events are off or could not be read.")
    recent: list[str] = Field(description="Workers with a recent heartbeat, newest first.")
    last: float | None = Field(description="Seconds since the newest heartbeat of any worker.")
    error: str = ""


class Health(BaseModel):
    """The broker, the result store and the workers."""

    ok: bool = Field(description="Broker and result store both answer.")
    broker: StoreHealth
    results: StoreHealth
    workers: WorkersHealth


def _store(health: admin.Health) -> StoreHealth:
    return StoreHealth(url=health.broker, ok=health.ok, latency=health.latency, error=health.error)


@probes.get(
    "/live",
    name="health.live",
    summary="The server is up",
    response_model=Status,
    response_model_exclude_defaults=True,
)
async def live() -> Status:
    return Status(status="ok")


@probes.get(
    "/ready",
    name="health.ready",
    summary="The broker and the result store answer",
    response_model=Status,
    responses={503: {"model": Status, "description": "Not ready"}},
)
def ready(state: StateDep) -> JSONResponse:
    failing = state.probes.failing()
    body = Status(status="unavailable" if failing else "ok", failing=failing)
    return JSONResponse(body.model_dump(), 503 if failing else 200)


@probes.get(
    "/metrics",
    name="health.metrics",
    summary="Prometheus metrics (the gauges of `gopherq exporter`)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    dependencies=[require(Role.VIEWER)],
)
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.probes.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/health",
    name="health.read",
    summary="Broker, result store and workers",
    response_model=Health,
    dependencies=[require(Role.VIEWER)],
)
def health(app: AppDep) -> Response:
    broker = admin.check_health(app)
    results = admin.check_result_store(app)
    beats = admin.recent_heartbeats(app)
    return model_response(
        Health(
            ok=broker.ok and results.ok,
            broker=_store(broker),
            results=_store(results),
            workers=WorkersHealth(
                checked=beats.checked,
                recent=list(beats.workers),
                last=beats.last,
                error=beats.error,
            ),
        )
    )
