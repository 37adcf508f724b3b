"""Where a run's code came from: the git commit of a folder, and dlrun's own version and source."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dlrun


def git_commit(folder: Path) -> str | None:
    """HEAD of the git work tree holding ``folder``, with ``-dirty`` if it has changes; None outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def dlrun_source() -> str:
    """dlrun's version, plus its commit when it runs from a source checkout (``0.1.0+abc123``)."""
    package = Path(dlrun.__file__).resolve().parent
    if (package.parents[1] / ".git").exists():
        commit = git_commit(package)
        if commit:
            return f"{dlrun.__version__}+{commit}"
    return dlrun.__version__
