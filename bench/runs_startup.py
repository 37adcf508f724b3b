"""``dlrun runs`` on a store of 100 runs: wall time of the listing (target < 1.5 s), against MLflow's own floor.

    python bench/runs_startup.py                 # 100 runs, 5 repeats of each command
    python bench/runs_startup.py --runs 20 --repeats 1

The store is written once with MlflowClient, shaped like dlrun's records: 10 sweeps of 5 jobs (parent
and children tagged as dlrun tags them) and 40 single runs, each with ~90 params, ``train/loss`` per
step (200 points), ``val/acc`` and ``val/loss`` per epoch (10), ``test/*`` once, FINISHED/FAILED/KILLED.
Each command runs in a fresh process. For reference: ``dlrun runs --filter ...`` (which goes through
MLflow's client) and a bare ``import mlflow.tracking``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import dlrun_bin, emit, machine, median

SWEEPS, JOBS = 10, 5


def wall(argv: list[str], cwd: Path) -> float:
    """Seconds ``argv`` takes to finish (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def make_store(uri: str, runs: int) -> None:
    """``runs`` runs shaped like dlrun's (sweeps included) in a new SQLite store."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    rng = random.Random(0)
    client = MlflowClient(uri)
    experiment = client.create_experiment("mnist")
    now = int(time.time() * 1000)

    def one(name: str, tags: dict[str, str], lr: float, status: str) -> str:
        run = client.create_run(experiment, run_name=name, tags=tags, start_time=now - rng.randint(0, 10**8))
        params = [Param(f"group{g}.key{k}", str(g * k)) for g in range(9) for k in range(10)]
        params += [
            Param("optimizer.lr", str(lr)),
            Param("objective.monitor", "val/acc"),
            Param("objective.mode", "max"),
        ]
        metrics = [Metric("train/loss", 2.0 / (s + 1), now, s) for s in range(200)]
        for epoch in range(10):
            metrics += [Metric("val/acc", 0.9 + epoch / 100 + rng.random() / 100, now, epoch * 20)]
            metrics += [Metric("val/loss", 0.3 - epoch / 100, now, epoch * 20)]
        metrics += [Metric("test/acc", 0.95 + rng.random() / 50, now, 200), Metric("test/loss", 0.2, now, 200)]
        for start in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[start : start + 100])
        for start in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
        client.log_batch(run.info.run_id, tags=[RunTag("dlrun.output_dir", f"/tmp/outputs/{name}")])
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    sweeps = min(SWEEPS, runs // (JOBS + 1))
    for s in range(sweeps):
        parent = client.create_run(
            experiment, run_name=f"mnist-sweep-{s}", tags={"dlrun.task": "sweep", "dlrun.sweep_id": f"s{s}"}
        )
        for j in range(JOBS):
            tags = {"mlflow.parentRunId": parent.info.run_id, "dlrun.sweep_id": f"s{s}", "dlrun.job_num": str(j)}
            one(f"mnist-mlp-{j}", tags, 10 ** -rng.uniform(2, 4), "FINISHED")
        client.set_terminated(parent.info.run_id, "FINISHED")
    for i in range(runs - sweeps * (JOBS + 1)):
        one(f"mnist-mlp-run{i}", {}, 10 ** -rng.uniform(2, 4), rng.choice(["FINISHED"] * 8 + ["FAILED", "KILLED"]))


def main() -> None:
    """Time ``dlrun runs`` (20 latest, and all), the MLflow-client path, and MLflow's import; print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="runs in the store (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    dlrun = dlrun_bin()
    with tempfile.TemporaryDirectory(prefix="dlrun-bench-runs-") as tmp:
        cwd = Path(tmp)
        make_store(f"sqlite:///{cwd / 'mlflow.db'}", args.runs)
        commands = {
            "runs": [dlrun, "runs"],
            "runs_all": [dlrun, "runs", "--last", "0"],
            "runs_filter": [dlrun, "runs", "--filter", "metrics.`test/acc` > 0"],
            "import_mlflow": [sys.executable, "-c", "import mlflow.tracking"],
        }
        wall(commands["runs"], cwd)  # untimed: warms the file cache
        times: dict[str, list[float]] = {name: [] for name in commands}
        for repeat in range(args.repeats):
            for name, argv in commands.items():
                times[name].append(wall(argv, cwd))
            print(f"repeat {repeat + 1}: " + "  ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()), flush=True)
    result: dict[str, Any] = {"machine": machine(), "store_runs": args.runs}
    result["commands"] = {
        name: " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv)) for name, argv in commands.items()
    }
    result.update({f"{name}_s": median(values) for name, values in times.items()})
    result["runs_s_all"] = times
    result["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)


if __name__ == "__main__":
    main()
