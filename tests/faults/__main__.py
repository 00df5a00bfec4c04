"""Run the fault suite and print its figures: ``python -m tests.faults [--full]``.

From the repository root. Runs ``pytest tests/faults`` on ``-n`` processes
(default 2) with the reduced counts, or with ``--full`` the full ones
(``GOPHERQ_TEST_FAULTS=full``: 10,000 tasks with random child kills, ...), then
prints each scenario's figures as a Markdown table, the one in
docs/reliability.md. Arguments after ``--`` go to pytest (``-- -k redis``).
Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

COLUMNS = ("scenario", "broker", "tasks", "kills", "lost", "duplicates", "recovery")
HEADINGS = ("scenario", "broker", "tasks", "kills", "lost", "duplicates", "recovery (s)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the full counts (minutes)")
    parser.add_argument("-n", default="2", help="pytest-xdist processes (default 2)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gopherq-faults-") as directory:
        report = Path(directory) / "figures.jsonl"
        env = dict(os.environ, GOPHERQ_TEST_FAULTS_REPORT=str(report))
        env["GOPHERQ_TEST_FAULTS"] = "full" if options.full else "ci"
        command = [sys.executable, "-m", "pytest", str(Path(__file__).parent),
                   "-n", options.n, "-q", *options.pytest_args]  # fmt: skip
        status = subprocess.call(command, env=env)
        rows = [json.loads(line) for line in report.read_text().splitlines()] if (
            report.exists()
        ) else []  # fmt: skip
    print(table(sorted(rows, key=lambda row: (row["scenario"], row["broker"]))))
    return status


def table(rows: list[dict[str, object]]) -> str:
    """``rows`` of figures as a Markdown table."""
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[column]) for column in COLUMNS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
