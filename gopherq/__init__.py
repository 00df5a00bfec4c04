"""gopherq: a fast, reliable background task framework."""

from __future__ import annotations

__version__ = "0.1.0"
