"""Whether the ``web`` extra is installed, asked before importing ``gopherq.web``, and the
server defaults the CLI shows without importing it."""

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


DEFAULT_THREADS = 2
"""``gopherq serve``'s thread pool size. The routes' blocking work is Python code
under the GIL (and SQLite hands the GIL back on every step), so more threads only
trade it back and forth: at 40, a job list cost 3 times the CPU it costs with one
thread, under 50 concurrent clients (docs/http-api.md, Performance). Two let a
slow store read overlap with a fast one."""
