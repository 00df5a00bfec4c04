"""Finding the application: ``-A module[:attr]``, as the worker and CLI take it."""

from __future__ import annotations

import importlib
import os
import sys

from gopherq.app import GopherQ
from gopherq.errors import ConfigurationError


def load_app(spec: str) -> GopherQ:
    """Import ``module[:attr]`` and return its app.

    Without ``attr``: the module's ``app`` attribute if it is a ``GopherQ``,
    else the single ``GopherQ`` instance among its attributes. The current
    directory is importable, as with ``python -m``.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ConfigurationError(f"invalid app {spec!r}; use module or module:attr")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(f"cannot import app module {module_name!r}: {exc}") from None
        raise
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, GopherQ):
            raise ConfigurationError(f"{module_name}:{attr} is not a GopherQ app")
        return app
    app = getattr(module, "app", None)
    if isinstance(app, GopherQ):
        return app
    found = [value for value in vars(module).values() if isinstance(value, GopherQ)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigurationError(f"no GopherQ app in module {module_name!r}")
    raise ConfigurationError(
        f"module {module_name!r} has {len(found)} GopherQ apps; name one as {module_name}:attr"
    )
