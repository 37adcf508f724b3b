"""Helpers shared by the benchmark scripts: paths, data, the machine, medians, flags, output.

The hand-written MNIST reference (data reading, networks, the training loop) is ``reference_loop.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def data_dir() -> Path:
    """Folder holding ``mnist/`` and ``multi30k/``: ``$DLRUN_DATA_DIR``, else ``./data``, else ``../shared/data``."""
    for candidate in (os.environ.get("DLRUN_DATA_DIR"), ROOT / "data", ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate).resolve()
    sys.exit("bench: no data; set DLRUN_DATA_DIR to a folder holding mnist/ and multi30k/")


def dlrun_bin() -> str:
    """The ``dlrun`` console script next to this interpreter (else ``dlrun`` on PATH)."""
    beside = Path(sys.executable).with_name("dlrun")
    return str(beside) if beside.exists() else "dlrun"


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return statistics.median(values)


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python/torch versions and the current 1-minute load."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def size_args(parser: argparse.ArgumentParser, batches: int, repeats: int) -> argparse.ArgumentParser:
    """Add the size flags every script takes: ``--batches``, ``--repeats``, ``--json``."""
    parser.add_argument(
        "--batches", type=int, default=batches, help=f"batches/steps per measurement (default {batches}; 0: an epoch)"
    )
    parser.add_argument("--repeats", type=int, default=repeats, help=f"alternating repeats (default {repeats})")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on every side (default 1)")
    return parser


def set_threads(threads: int) -> None:
    """Use ``threads`` torch threads here and in child processes (OMP_NUM_THREADS/MKL_NUM_THREADS)."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def emit(results: dict[str, Any], path: Path | None) -> None:
    """Print results as JSON and write them to ``path`` if given."""
    text = json.dumps(results, indent=2, default=str)
    print(text, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
