"""Static typing: mypy accepts correct task calls and rejects wrong ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

HERE = Path(__file__).parent / "typing"


def run_mypy(path: Path, tmp_path: Path) -> tuple[str, int]:
    stdout, stderr, status = mypy_api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(path)]
    )
    return stdout + stderr, status


def test_correct_calls_type_check(tmp_path: Path) -> None:
    output, status = run_mypy(HERE / "accept_tasks.py", tmp_path)
    assert status == 0, output


def test_wrong_calls_are_rejected(tmp_path: Path) -> None:
    path = HERE / "reject_tasks.py"
    output, status = run_mypy(path, tmp_path)
    assert status == 1, output
    expected = {
        number
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.endswith("# error")
    }
    reported = {int(m.group(1)) for m in re.finditer(r"reject_tasks\.py:(\d+): error", output)}
    assert expected == reported, output
