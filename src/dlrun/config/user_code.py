"""The rule that makes a user's own code importable by ``_target_``: the job's working directory is on the path.

The ``dlrun`` console script (unlike ``python -m dlrun``) does not put the working directory on
``sys.path``; this does, for this process and, through ``PYTHONPATH``, for every process it starts
(DDP ranks, joblib and submitit workers). Code elsewhere: install it (``pip install -e``) or name
its folder in ``PYTHONPATH``, which is kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def make_importable(folder: Path | None = None) -> Path:
    """Put ``folder`` (default: the working directory) first on ``sys.path`` and ``PYTHONPATH``; return it."""
    folder = (folder or Path.cwd()).resolve()
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if entry not in current:
        os.environ["PYTHONPATH"] = os.pathsep.join([entry, *current])
    return folder
