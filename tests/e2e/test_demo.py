"""The README's first command: ``python examples/demo.py`` runs to the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_demo_runs_every_task_to_its_outcome(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    command = [sys.executable, "demo.py", "--db", str(tmp_path / "demo.db")]
    done = subprocess.run(
        command, cwd=EXAMPLES, env=env, capture_output=True, text=True, check=False, timeout=110
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(" -> " in line for line in lines) == 12, done.stdout
    assert any("build_report" in line and "cancelled while running" in line for line in lines)
    assert "worker stopped (exit code 0)" in done.stdout
