"""The audit log of mutating calls (admin)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["audit"])
