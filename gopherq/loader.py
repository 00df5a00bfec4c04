"""Finding the application: ``-A module[:attr]``, as the worker and CLI take it."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

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
    module = _import(module_name, f"app module {module_name!r}")
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, GopherQ):
            raise ConfigurationError(f"{module_name}:{attr} is not a GopherQ app")
        app.import_tasks()
        return app
    app = getattr(module, "app", None)
    if not isinstance(app, GopherQ):
        app = _only_app(module_name, vars(module).values())
    app.import_tasks()
    return app


def _only_app(module_name: str, values: Iterable[object]) -> GopherQ:
    """The single ``GopherQ`` among a module's attributes."""
    found = [value for value in values if isinstance(value, GopherQ)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigurationError(f"no GopherQ app in module {module_name!r}")
    raise ConfigurationError(
        f"module {module_name!r} has {len(found)} GopherQ apps; name one as {module_name}:attr"
    )


def import_task_modules(
    app_name: str, include: Iterable[str], discover: Iterable[tuple[Sequence[str], str]]
) -> list[str]:
    """Import the modules ``include`` lists, and ``<package>.<related>`` for every
    ``(packages, related)`` of ``discover`` where that module exists; their names.

    A module of ``include`` or a package that is missing raises
    ``ConfigurationError``; an error inside a module that exists propagates.
    """
    imported = []
    for name in include:
        _import(name, f"module {name!r} (listed in include= of app {app_name})")
        imported.append(name)
    for packages, related in discover:
        for package in packages:
            _import(package, f"package {package!r} (given to autodiscover_tasks of app {app_name})")
            name = f"{package}.{related}"
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise  # a module that exists failed to import another
                continue
            imported.append(name)
    return imported


def _import(name: str, what: str) -> ModuleType:
    """Import ``name``; ``ConfigurationError`` naming ``what`` if it is missing (not
    if a module it imports is: that error is the module's own)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigurationError(f"cannot import {what}: {exc}") from None
        raise
