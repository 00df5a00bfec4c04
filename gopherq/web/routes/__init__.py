"""One router per resource; ``ROUTERS`` are mounted under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from gopherq.web.routes import audit, dead, events, health, jobs, keys, queues, schedules, workers

ROUTERS: list[APIRouter] = [
    jobs.router,
    dead.router,
    queues.router,
    schedules.router,
    workers.router,
    events.router,
    audit.router,
    keys.router,
    health.router,
]
