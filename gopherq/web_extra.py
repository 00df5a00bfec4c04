"""Whether the ``web`` extra is installed, asked before importing ``gopherq.web``."""

from __future__ import annotations

import importlib.util

from gopherq.errors import ConfigurationError


def require_web() -> None:
    """Raise ``ConfigurationError`` with the install command unless FastAPI, uvicorn
    and Jinja2 (the dashboard's templates) are importable."""
    missing = [m for m in ("fastapi", "uvicorn", "jinja2") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(
            f"the HTTP API needs {', '.join(missing)}: pip install 'gopherq[web]'"
        )
