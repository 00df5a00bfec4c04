"""The package's layers (DESIGN.md, "Layers"): imports point down only, with no cycles.

Read from the source with ``ast``: an import inside a function (a lazy one) is
a dependency too; one under ``if TYPE_CHECKING:`` is not (it never runs).
A further test imports every module on its own, as the first gopherq module of
a fresh interpreter, where a cycle between modules shows as an ``ImportError``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import gopherq

PACKAGE = Path(gopherq.__file__).parent

# Lowest first, by the name under gopherq ("" is the package itself, the facade). A
# module may import its own layer and those below. An unlisted module (a new package)
# counts as above the brokers: the lowest three layers may not import it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "plain data and configuration",
        (
            "errors", "states", "message", "serializer", "redaction", "backoff",
            "celery_names", "signing", "settings", "routes", "version", "limits",
        ),
    ),
    ("stores", ("stores",)),
    ("brokers", ("brokers",)),
    (
        "shared services and what application code touches",
        (
            "results", "events", "schedules", "protocol", "app", "task", "result", "runner",
            "middleware", "context", "tracker", "once", "uniqueness", "loader", "admin", "display",
            "observability", "access", "web_extra", "admin_rates", "fairness",
        ),
    ),
    ("processes that run the app", ("worker", "beat")),
    ("operator surfaces", ("cli", "cli_beat", "cli_exporter", "cli_history", "cli_protocol",
                           "cli_support", "cli_web", "cli_access", "cli_rates", "web", "__main__",
                           "")),
]  # fmt: skip
UPWARD = {("gopherq.app", "gopherq.web")}
"""Lazy imports allowed to point up: ``app.asgi()`` builds the HTTP API of the optional
``web`` extra, and exists only so that the app can be mounted in one's own ASGI app."""
STRICT = 3
"""The layers below this one may import nothing from a layer not listed."""


def module_name(path: Path) -> str:
    """``gopherq.brokers.redis`` for ``gopherq/brokers/redis/__init__.py``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[str]:
    """Every module of the package, by name."""
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def layer(module: str) -> int | None:
    """The index in ``LAYERS`` of ``module``'s layer; None when it is not listed."""
    top = module.split(".")[1] if "." in module else ""
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    return None


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    lazy: bool
    name: str
    """What the statement names: ``gopherq.results.base.JobRecord`` for
    ``from gopherq.results.base import JobRecord``."""


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    """The gopherq modules ``module`` imports when it runs, with where and whether lazily."""

    def visit(node: ast.AST, lazy: bool) -> Iterator[Import]:
        if isinstance(node, ast.If) and _type_checking(node):
            for other in node.orelse:
                yield from visit(other, lazy)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # ``from a import b``: b is a module of its own, or a name in a.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            target = name
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield Import(module, target, getattr(node, "lineno", 0), lazy, name)
        inner = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, lazy or inner)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), False)


def all_imports() -> list[Import]:
    known = set(modules())
    return [
        found
        for path in sorted(PACKAGE.rglob("*.py"))
        for found in imports_of(module_name(path), path, known)
    ]


def test_lower_layers_do_not_import_higher_ones() -> None:
    wrong = []
    for found in all_imports():
        low, high = layer(found.importer), layer(found.imported)
        if low is None or (found.lazy and (found.importer, found.imported) in UPWARD):
            continue  # not listed: above the brokers, no rule of its own
        if (high is None and low < STRICT) or (high is not None and high > low):
            wrong.append(
                f"{found.importer} (line {found.line}, {LAYERS[low][0]}) imports "
                f"{found.imported} ({LAYERS[high][0] if high is not None else 'not listed'})"
            )
    assert not wrong, "\n".join(wrong)


def test_the_beat_imports_nothing_of_the_worker() -> None:
    """What both need (the logging set-up, say) lives below them; the worker may run a
    beat (``-B``), never the other way."""
    wrong = [
        f"{found.importer} (line {found.line}) imports {found.imported}"
        for found in all_imports()
        if found.importer == "gopherq.beat" and found.imported.startswith("gopherq.worker")
    ]
    assert not wrong, "\n".join(wrong)


def private_region(name: str) -> str | None:
    """Where ``name`` may be imported from if it is private: the package holding the
    private module, or the package of the module holding the private name."""
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:index])
            is_package = (PACKAGE.parent / owner.replace(".", "/") / "__init__.py").exists()
            return owner if is_package else owner.rpartition(".")[0]
    return None


def test_private_modules_and_names_stay_in_their_package() -> None:
    """A module or name with a leading underscore is imported only inside its package:
    what other packages share has a public home (``gopherq.stores``, for one)."""
    wrong = []
    for found in all_imports():
        region = private_region(found.name)
        if region is not None and not (found.importer + ".").startswith(region + "."):
            wrong.append(f"{found.importer} (line {found.line}) imports {found.name}")
    assert not wrong, "\n".join(wrong)


def test_no_cycles_among_module_level_imports() -> None:
    """Imports that run when a module is first imported (not lazy ones) form no cycle.

    The package ``gopherq`` is left out as a target: every submodule's import runs
    it first, but as a whole it is a facade nothing inside the package imports.
    """
    graph: dict[str, set[str]] = {module: set() for module in modules()}
    for found in all_imports():
        if not found.lazy and found.imported != "gopherq":
            graph[found.importer].add(found.imported)
    cycles = _cycles(graph)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


# Imports each module as the first gopherq module of the interpreter: between two
# modules, gopherq's own modules are forgotten (third-party ones stay, for speed).
_IMPORT_EACH = textwrap.dedent(
    """
    import importlib, json, sys, traceback
    failed = {}
    for name in json.loads(sys.argv[1]):
        for loaded in [m for m in sys.modules if m == "gopherq" or m.startswith("gopherq.")]:
            del sys.modules[loaded]
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if (error.name or "gopherq").split(".")[0] == "gopherq":
                failed[name] = traceback.format_exc()
            # else: an optional dependency that is not installed here
        except Exception:
            failed[name] = traceback.format_exc()
    print(json.dumps(failed))
    """
)


@pytest.mark.timeout(300)  # some 150 fresh imports: slow on a loaded machine
def test_every_module_imports_first_on_its_own() -> None:
    names = [name for name in modules() if name != "gopherq.__main__"]  # runs the CLI
    process = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=PACKAGE.parent,
    )
    assert process.returncode == 0, process.stderr
    failed: dict[str, str] = json.loads(process.stdout.splitlines()[-1])
    assert not failed, "\n".join(f"{name}:\n{error}" for name, error in failed.items())


def test_the_reader_counts_lazy_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            from gopherq.errors import BrokerError
            import gopherq.stores.redis
            if TYPE_CHECKING:
                from gopherq.app import GopherQ
            else:
                import gopherq.states
            def later():
                from gopherq.worker import supervisor
            """
        )
    )
    found = {
        (i.imported, i.lazy) for i in imports_of("gopherq.brokers.probe", source, set(modules()))
    }
    assert found == {
        ("gopherq.errors", False),
        ("gopherq.stores.redis", False),
        ("gopherq.states", False),
        ("gopherq.worker.supervisor", True),
    }
    assert layer("gopherq.brokers.probe") == 2 and layer("gopherq.worker.supervisor") == 4
