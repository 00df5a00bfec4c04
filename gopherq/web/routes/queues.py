"""Queues: stats, pause, resume, purge."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["queues"])
