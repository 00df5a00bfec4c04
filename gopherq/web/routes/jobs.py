"""Jobs: submit, list, read, wait for, cancel, retry and delete tasks."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["jobs"])
