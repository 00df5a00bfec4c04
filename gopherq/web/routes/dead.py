"""Dead letters: list, retry, purge, edit and replay."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["dead letters"])
