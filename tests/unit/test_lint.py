"""The lint rule set of pyproject.toml (pyflakes, pycodestyle, isort, bugbear, pyupgrade) holds on src, tests, bench."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the dev extra: pip install '.[dev]'"
    done = subprocess.run([ruff, "check", "src", "tests", "bench"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_version_is_written_once() -> None:
    import dlrun

    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and f'version = "{dlrun.__version__}"' not in pyproject
    from importlib.metadata import version

    assert version("dlrun") == dlrun.__version__  # the installed metadata reads it from src/dlrun/__init__.py
