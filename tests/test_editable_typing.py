"""The README's install command gives mypy gopherq's types.

``pip install -e .`` into a fresh virtual environment, then ``mypy --strict`` on
a user's file that calls a task wrongly: mypy must report that call, which it
can only do if it finds gopherq (and its ``py.typed``) through the editable
install. An import hook (setuptools' default for this layout) is invisible to
mypy; setup.cfg's ``package_dir`` makes the install a plain path in a ``.pth``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parent.parent

USER_FILE = """\
from gopherq import GopherQ

app = GopherQ("user")


@app.task
def add(x: int, y: int) -> int:
    return x + y


add.delay("one", 2)
"""


@pytest.mark.slow
def test_mypy_sees_the_types_after_pip_install_editable(tmp_path: Path) -> None:
    # As a user's shell: no PYTHONPATH pointing at a checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-e", str(ROOT)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert install.returncode == 0, install.stderr
    user = tmp_path / "user"  # not the repository: mypy must find gopherq as installed
    user.mkdir()
    (user / "user_app.py").write_text(USER_FILE)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    checked = subprocess.run(
        [*mypy, "--python-executable", str(python), "user_app.py"],
        cwd=user,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert checked.stdout.splitlines()[:-1] == [
        'user_app.py:11: error: Argument 1 to "delay" of "BaseTask" has incompatible type '
        '"str"; expected "int"  [arg-type]'
    ], checked.stdout + checked.stderr
