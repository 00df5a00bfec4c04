"""Workers and the task registry."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["workers"])
