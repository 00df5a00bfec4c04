"""Probes and health: ``/live``, ``/ready`` (unauthenticated, for orchestrators) and
``/api/v1/health`` (viewer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gopherq import admin
from gopherq.access.roles import Role
from gopherq.web.auth import require
from gopherq.web.state import AppDep

probes = APIRouter(tags=["health"])
router = APIRouter(tags=["health"])


@probes.get("/live", summary="The server is up")
def live() -> dict[str, str]:
    return {"status": "ok"}


@probes.get("/ready", summary="The broker answers", responses={503: {"description": "Not ready"}})
def ready(app: AppDep) -> JSONResponse:
    health = admin.check_health(app)
    body = {"status": "ok" if health.ok else "unavailable"}
    return JSONResponse(body, 200 if health.ok else 503)


@router.get("/health", summary="Broker and workers", dependencies=[require(Role.VIEWER)])
def health(app: AppDep) -> dict[str, Any]:
    broker = admin.check_health(app)
    beats = admin.recent_heartbeats(app)
    return {
        "ok": broker.ok,
        "broker": {
            "url": broker.broker,
            "ok": broker.ok,
            "latency": broker.latency,
            "error": broker.error,
        },
        "workers": {
            "checked": beats.checked,
            "recent": list(beats.workers),
            "last": beats.last,
            "error": beats.error,
        },
    }
