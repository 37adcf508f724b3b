"""What the capsule costs a training run: time and size of ``capsule/`` for a job started in this repository.

    python bench/capsule_cost.py                 # 5 repeats, medians, this repository as the job's folder
    python bench/capsule_cost.py --folder PATH   # another project (a git work tree or a plain folder)

Each repeat opens a real run in a fresh SQLite store (as a training run does) and times
``dlrun.tracking.capsule.log_capsule``: the git calls and the diff, the environment record (torch already
imported, as in a run) and the MLflow writes; the parts are timed alone as well. Sizes are the files the
run's ``capsule/`` holds. Targets (issue 24): under 0.5 s and under 1 MB. Not part of ``run_all.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, emit, machine, median, set_threads, size_args

TARGET_S, TARGET_BYTES = 0.5, 1_000_000


def timed(function: Any, *args: Any) -> tuple[float, Any]:
    """Seconds ``function(*args)`` takes, and what it returned."""
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def one_run(folder: Path, scratch: Path) -> tuple[float, dict[str, int]]:
    """Open a run in a new store under ``scratch``, log the capsule of ``folder``; seconds and file sizes."""
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.capsule import log_capsule
    from dlrun.tracking.run import TrackedRun

    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("capsule", artifact_location=(scratch / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    seconds, _ = timed(log_capsule, TrackedRun(client, run_id, experiment, uri), folder)
    client.set_terminated(run_id, "FINISHED")
    capsule = scratch / "artifacts" / run_id / "artifacts" / "capsule"
    return seconds, {p.name: p.stat().st_size for p in sorted(capsule.iterdir())}


def main() -> None:
    """Time the capsule of ``--folder`` ``--repeats`` times; print medians, sizes and the targets."""
    parser = size_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batches=0, repeats=5)
    parser.add_argument("--folder", type=Path, default=ROOT, help="the job's folder (default: this repository)")
    args = parser.parse_args()
    set_threads(args.threads)
    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..." per new store
        logging.getLogger(name).setLevel(logging.WARNING)
    import torch  # noqa: F401 - a training run has it imported when the capsule is recorded

    from dlrun.tracking.capsule import code_record, environment_record

    folder = args.folder.resolve()
    one_run(folder, Path(tempfile.mkdtemp(prefix="dlrun-bench-")))  # untimed: MLflow's tables, file cache
    totals, codes, environments, sizes = [], [], [], {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="dlrun-bench-") as tmp:
            seconds, sizes = one_run(folder, Path(tmp))
        totals.append(seconds)
        codes.append(timed(code_record, folder)[0])
        environments.append(timed(environment_record)[0])
    code = code_record(folder)[0]
    total_bytes = sum(sizes.values())
    results = {
        "folder": str(folder),
        "code": {k: code.get(k) for k in ("kind", "dirty", "diff_bytes", "capped")}
        | {"untracked_files": len(code.get("untracked_files", [])), "files": len(code.get("files", []))},
        "log_capsule_s": round(median(totals), 4),
        "log_capsule_runs_s": [round(t, 4) for t in totals],
        "code_record_s": round(median(codes), 4),
        "environment_record_s": round(median(environments), 4),
        "bytes": sizes,
        "total_bytes": total_bytes,
        "targets": {
            "time": f"{median(totals):.3f} s < {TARGET_S} s: {'met' if median(totals) < TARGET_S else 'MISSED'}",
            "size": f"{total_bytes} B < {TARGET_BYTES} B: {'met' if total_bytes < TARGET_BYTES else 'MISSED'}",
        },
        "machine": machine(),
    }
    emit(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
