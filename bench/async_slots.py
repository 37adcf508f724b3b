"""Asynchronous slots vs Hydra's batches: the same 8-trial Optuna search with 2 slots, run as
``hydra.sweeper.workers=2`` (two workers, each starting a trial as soon as it is free) and as
``hydra/launcher=joblib hydra.launcher.n_jobs=2`` (batches of two that end with their slower trial).

    python bench/async_slots.py                          # 8 trials, max_epochs drawn from 1-6, 150 batches/epoch
    python bench/async_slots.py --trials 4 --batches 20  # smaller

Trials differ in length on purpose: ``trainer.max_epochs`` is a search parameter, ``range(1, 7)``, drawn by
the random sampler seeded per trial (trial k draws with seed + k), so both sides run the same 8 lengths.
Each side is one ``dlrun`` command in a fresh folder with its own MLflow store and study, every job with
``OMP_NUM_THREADS=1``. Measured per side: the command's wall time, and how much of the two slots' time
between the first trial's start and the last one's end no trial ran (from the trials' MLflow run times:
1 - sum of run times / (2 x that span)). The machine's load is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import data_dir, machine

SIDES = {
    "asynchronous: `hydra.sweeper.workers=2`": ["hydra.sweeper.workers=2"],
    "Hydra's batches: `hydra/launcher=joblib hydra.launcher.n_jobs=2`": [
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    ],
}


def run_side(extra: list[str], trials: int, batches: int, seed: int) -> dict[str, Any]:
    """Run one side's search in a fresh folder; its wall seconds, trial lengths and slot idle fraction."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="async_slots_") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        argv = [sys.executable, "-m", "dlrun", "-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=random",
                f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweeper.n_trials={trials}",
                "hydra.sweeper.direction=maximize", "hydra.sweeper.study_name=bench", "optimized_metric=val/acc",
                "trainer.max_epochs=range(1,7)", f"trainer.limit_train_batches={batches}",
                "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "data.eval_batch_size=500",
                "tracking.log_model=false", "callbacks.plots=false", f"tracking.uri={uri}", *extra]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS="1", DLRUN_DATA_DIR=str(data_dir()))
        env.pop("HYDRA_FULL_ERROR", None)
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"bench: {' '.join(extra)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = [r for r in client.search_runs(ids) if "mlflow.parentRunId" in r.data.tags]
    spans = sorted((r.info.start_time / 1000, r.info.end_time / 1000, r) for r in runs)
    first, last = spans[0][0], max(end for _, end, _ in spans)
    busy = sum(end - begin for begin, end, _ in spans)
    return {
        "wall_s": round(wall, 1),
        "span_s": round(last - first, 1),
        "busy_s": round(busy, 1),
        "idle_fraction": round(1 - busy / (2 * (last - first)), 3),
        "epochs_by_trial": {
            int(r.data.tags["dlrun.trial"]): int(r.data.params["trainer.max_epochs"]) for _, _, r in spans
        },
        "threads": sorted({r.data.params.get("resources.threads_used") for _, _, r in spans}),
    }


def main() -> None:
    """Run both sides one after the other and print a markdown table and the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--batches", type=int, default=150, help="training batches of 128 per epoch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = {name: run_side(extra, args.trials, args.batches, args.seed) for name, extra in SIDES.items()}
    load_after = os.getloadavg()[0]
    info = machine()
    print(f"{info['cpu']} ({info['cores']} cores); 1-minute load {load_before:.1f} -> {load_after:.1f}")
    print("| side | wall of the search | first trial start to last end | trial time | slot time idle |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']} s | {r['span_s']} s | {r['busy_s']} s | **{r['idle_fraction']:.0%}** |")
    print(json.dumps({"machine": info, "load": [load_before, load_after], "sides": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
