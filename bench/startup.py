"""Start-up: wall time of ``dlrun --help`` and of ``dlrun trainer.fast_dev_run=true``, with import floors.

    python bench/startup.py                                 # 5 x --help, 3 x fast_dev_run, 3 x each import
    python bench/startup.py --repeats 1

Each command runs in a fresh process from a scratch working directory (MLflow store there; with more
than one repeat, an untimed fast_dev_run first creates it and warms the file cache). For reference, bare
imports of ``pytorch_lightning`` and ``mlflow.tracking`` are timed too: no training run starts faster.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import data_dir, dlrun_bin, emit, machine, median, set_threads, size_args


def wall(argv: list[str], cwd: Path) -> float:
    """Seconds ``argv`` takes to finish (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        output = proc.stdout[-2000:] + proc.stderr[-2000:]
        sys.exit(f"bench: {' '.join(argv)} failed (exit {proc.returncode}):\n{output}")
    return time.perf_counter() - start


def main() -> None:
    """Time --help, fast_dev_run and the two big imports; print medians."""
    parser = size_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batches=0, repeats=3)
    parser.add_argument("--help-repeats", type=int, default=5, help="runs of dlrun --help (default 5)")
    parser.add_argument("--import-repeats", type=int, default=None, help="bare-import timings (default: --repeats)")
    args = parser.parse_args()
    set_threads(args.threads)
    os.environ["DLRUN_DATA_DIR"] = str(data_dir())
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    dlrun = dlrun_bin()
    runs: dict[str, list[float]] = {"help_s": [], "fast_dev_run_s": [], "import_lightning_s": [], "import_mlflow_s": []}
    with tempfile.TemporaryDirectory(prefix="dlrun-bench-") as tmp:
        cwd = Path(tmp)
        fast_dev_run = [dlrun, "trainer.fast_dev_run=true"]
        if args.repeats > 1:
            wall(fast_dev_run, cwd)  # untimed: creates ./mlflow.db, warms the file cache
        for _ in range(max(args.help_repeats, args.repeats)):
            runs["help_s"].append(wall([dlrun, "--help"], cwd))
        imports = args.repeats if args.import_repeats is None else args.import_repeats
        for repeat in range(max(args.repeats, imports)):
            if repeat < args.repeats:
                runs["fast_dev_run_s"].append(wall(fast_dev_run, cwd))
            if repeat < imports:
                runs["import_lightning_s"].append(wall([sys.executable, "-c", "import pytorch_lightning"], cwd))
                runs["import_mlflow_s"].append(wall([sys.executable, "-c", "import mlflow.tracking"], cwd))
            print(f"repeat {repeat + 1}: " + "  ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items() if v), flush=True)
    commands = {"help": "dlrun --help", "fast_dev_run": "dlrun trainer.fast_dev_run=true"}
    result: dict[str, Any] = {"machine": machine(), "commands": commands}
    result.update({name: median(values) for name, values in runs.items() if values})
    result["runs"] = runs
    result["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)


if __name__ == "__main__":
    main()
