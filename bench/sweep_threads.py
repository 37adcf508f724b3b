"""Threads of parallel sweep jobs: a 4-job joblib sweep of short MNIST MLP trainings with torch's default
threads (one per core in every job), with dlrun's budget (``resources.threads=null``: cores // jobs at once),
and the same 4 jobs one after another (each with all cores).

    python bench/sweep_threads.py                       # 4 jobs, 2 epochs of 200 batches each
    python bench/sweep_threads.py --jobs 2 --epochs 1 --batches 20

Each side is one ``dlrun -m seed=1,2,3,4 experiment=mnist_mlp ...`` command in a fresh folder with its own
MLflow store; its wall time is the whole command's, and each job's samples/s is its logged
``train/samples_per_s`` (mean over its epochs). ``OMP_NUM_THREADS`` is removed from the jobs' environment,
so torch picks its own default where the budget does not set it. The machine's load is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, data_dir, emit, machine

SHIM = ROOT / "tests" / "sweeper_shim"  # wires the budget into training until src/dlrun/train.py does


def wired() -> bool:
    """True when the task layer applies the thread budget itself."""
    src = ROOT / "src" / "dlrun"
    return any("apply_thread_budget(" in (src / f).read_text() for f in ("train.py", "tasks.py") if (src / f).is_file())


def run_side(name: str, extra: list[str], jobs: int, epochs: int, batches: int) -> dict[str, Any]:
    """Run one side's sweep; its wall seconds and each job's samples/s and threads."""
    from mlflow.tracking import MlflowClient

    seeds = ",".join(str(s) for s in range(1, jobs + 1))
    with tempfile.TemporaryDirectory(prefix="sweep_threads_") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        argv = [sys.executable, "-m", "dlrun", "-m", f"seed={seeds}", "experiment=mnist_mlp",
                f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={batches}", "data.batch_size=128",
                "tracking.log_model=false", "callbacks.plots=false", f"tracking.uri={uri}", *extra]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        env["DLRUN_DATA_DIR"] = str(data_dir())
        if not wired():
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIM), env.get("PYTHONPATH")]))
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"bench: side {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = [r for r in client.search_runs(ids) if "mlflow.parentRunId" in r.data.tags]
        per_job = []
        for run in sorted(runs, key=lambda r: int(r.data.tags.get("dlrun.job_num", 0))):
            history = [m.value for m in client.get_metric_history(run.info.run_id, "train/samples_per_s")]
            per_job.append(
                {"samples_per_s": statistics.fmean(history), "threads": run.data.params.get("resources.threads_used")}
            )
    return {"wall_s": wall, "jobs": per_job}


def main() -> None:
    """Run the three sides and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4, help="sweep jobs (default 4), all at once with joblib")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per job (default 2)")
    parser.add_argument("--batches", type=int, default=200, help="training batches of 128 per epoch (default 200)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    parallel = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
    sides = {
        # torch's default, as every job had before the budget: one thread per core in each job
        "default threads, joblib": [*parallel, f"resources.threads={cores}"],
        "budgeted threads, joblib": [*parallel, "resources.threads=null"],
        "one after another": ["resources.threads=null"],
    }
    results: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()[0], "sides": {}}
    for name, extra in sides.items():
        results["sides"][name] = run_side(name, extra, args.jobs, args.epochs, args.batches)
    results["load_after"] = os.getloadavg()[0]
    print(f"\n{args.jobs} jobs x {args.epochs} epochs x {args.batches} batches of 128, {cores} cores; "
          f"1-min load {results['load_before']:.2f} -> {results['load_after']:.2f}")  # fmt: skip
    print("| side | torch threads per job | samples/s per job | wall of the sweep (s) |")
    print("| --- | --- | --- | --- |")
    for name, side in results["sides"].items():
        speeds = ", ".join(f"{j['samples_per_s']:.0f}" for j in side["jobs"])
        threads = ",".join(sorted({str(j["threads"]) for j in side["jobs"]}))
        print(f"| {name} | {threads} | {speeds} | {side['wall_s']:.1f} |")
    emit(results, args.json)


if __name__ == "__main__":
    main()
