"""Static typing: mypy accepts correct task calls and middleware and rejects wrong ones."""

from __future__ import annotations

import itertools
import re
import textwrap
from pathlib import Path

import pytest

from gopherq import middleware

mypy_api = pytest.importorskip("mypy.api")

HERE = Path(__file__).parent / "typing"


def run_mypy(path: Path, tmp_path: Path) -> tuple[str, int]:
    stdout, stderr, status = mypy_api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(path)]
    )
    return stdout + stderr, status


@pytest.mark.parametrize("name", sorted(p.name for p in HERE.glob("accept_*.py")))
def test_correct_code_type_checks(name: str, tmp_path: Path) -> None:
    output, status = run_mypy(HERE / name, tmp_path)
    assert status == 0, output


@pytest.mark.parametrize("name", sorted(p.name for p in HERE.glob("reject_*.py")))
def test_wrong_code_is_rejected(name: str, tmp_path: Path) -> None:
    path = HERE / name
    output, status = run_mypy(path, tmp_path)
    assert status == 1, output
    expected = {
        number
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.endswith("# error")
    }
    reported = {int(m.group(1)) for m in re.finditer(rf"{re.escape(name)}:(\d+): error", output)}
    assert expected == reported, output


def test_the_middleware_example_type_checks(tmp_path: Path) -> None:
    """The example in gopherq.middleware's docstring (its first ``::`` block), with the
    histogram it leaves out declared."""
    block = itertools.takewhile(
        lambda line: not line or line.startswith(" "),
        (middleware.__doc__ or "").split("::\n", 1)[1].splitlines(),
    )
    path = tmp_path / "example.py"
    path.write_text(
        "from typing import Any\n\nhistogram: Any = None\n"
        + textwrap.dedent("\n".join(block))
        + "\n"
    )
    output, status = run_mypy(path, tmp_path)
    assert status == 0, output + path.read_text()
