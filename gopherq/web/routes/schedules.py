"""Schedules: the beat's periodic entries."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["schedules"])
