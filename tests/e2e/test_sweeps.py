"""Sweeps: one parent run per sweep, child runs per job, the table, failing jobs, resumed sweeps, joblib
workers, Optuna, SLURM through submitit's local executor, and SQLite stores under concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from dlrun.sweeping.bookkeeping import JobFailed, Sweep, job_rows
from dlrun.sweeping.table import JobRow, best_row, common_overrides, sweep_table, table_text
from dlrun.tracking.identity import config_hash
from helpers import DATA, Result, Started, all_runs, dlrun, early, store_uri

# Tiny jobs: the sweep machinery is under test, not the training.
LIMITS = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=500",
    "model.hidden_sizes=[64]",
    "tracking.log_model=false",
    "callbacks.plots=false",
]
PARENT = "mlflow.parentRunId"


def split_runs(uri: str) -> tuple[list, list]:
    """(parent runs, child runs) of the store."""
    runs = all_runs(uri)
    return [r for r in runs if PARENT not in r.data.tags], [r for r in runs if PARENT in r.data.tags]


def artifact_text(uri: str, run_id: str, name: str, folder: Path) -> str:
    """Download one artifact of a run and read it."""
    from mlflow.tracking import MlflowClient

    return Path(MlflowClient(uri).download_artifacts(run_id, name, str(folder))).read_text(encoding="utf-8")


# Job 1 of the joblib sweep fails inside its run (config errors stop before a run opens): no MNIST files where
# it looks. Short relative folders keep the table's columns narrow (the data read relative to the working directory).
NOWHERE = "nowhere"
DATA_DIRS = f"paths.data_dir=real,{NOWHERE}"


@early
def joblib_sweep_twice(folder: Path) -> tuple:
    """The sweep with joblib workers, the store right after it, then the same command again (in-process launcher):
    an early job (helpers.early)."""
    uri = store_uri(folder)
    (folder / "real").symlink_to(DATA)
    sweep = ["-m", DATA_DIRS, "data.download=false", *LIMITS, f"tracking.uri={uri}"]
    first = dlrun([*sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], folder)
    after_first = split_runs(uri)
    return first, after_first, dlrun(sweep, folder)


def optuna_search(folder: Path) -> Result:
    uri = store_uri(folder)
    return dlrun(["hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", *LIMITS, f"tracking.uri={uri}"], folder)


def four_writers(folder: Path) -> tuple[str, list[tuple[int, str]]]:
    """Four processes writing runs into one new SQLite store at once: the store, (exit code, output) of each."""
    uri = store_uri(folder, "new.db")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for w in range(4)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    return uri, [(proc.returncode, out) for proc, out in zip(procs, outputs, strict=True)]


def sweep_without_mlflow(folder: Path, pythonpath: str | None) -> Result:
    """As on the GPU machine of bench/gpu_check.sh: `import mlflow` fails there."""
    blocker = folder / "no_mlflow" / "mlflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('mlflow is not installed here')\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(blocker.parent), pythonpath]))}
    return dlrun(["-m", "tracking=none", "seed=1,2", *LIMITS], folder, env=env)


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """The module's other three commands, independent: started at once, two at a time; each test checks its own."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("optuna", "writers", "no_mlflow")}
    pythonpath = os.environ.get("PYTHONPATH")
    started = Started(
        {
            "optuna": lambda: optuna_search(folders["optuna"]),
            "writers": lambda: four_writers(folders["writers"]),
            "no_mlflow": lambda: sweep_without_mlflow(folders["no_mlflow"], pythonpath),
        }
    )
    try:
        yield started
    finally:
        started.close()


def test_joblib_sweep_groups_jobs_keeps_going_after_a_failure_and_resumes(
    early_result: Callable, tmp_path: Path
) -> None:
    first, (parents, children), second = early_result(joblib_sweep_twice)
    uri = store_uri(first.cwd)
    nowhere, data_dirs = NOWHERE, DATA_DIRS
    missing = f"{nowhere}/mnist: missing"

    # The failing job did not sink the other one; the command still fails, naming it.
    assert first.returncode == 1, first.describe()
    assert first.error.startswith(f"sweep: 1 of 2 jobs failed; first: #1 (paths.data_dir={nowhere}): {missing}")
    assert len(parents) == 1 and len(children) == 2, first.describe()
    parent = parents[0]
    by_status = {r.info.status: r for r in children}
    assert set(by_status) == {"FINISHED", "FAILED"}
    done, failed = by_status["FINISHED"], by_status["FAILED"]
    sweep_id = parent.data.tags["dlrun.sweep_id"]
    for child in children:
        assert child.data.tags[PARENT] == parent.info.run_id
        assert child.data.tags["dlrun.sweep_id"] == sweep_id
        assert len(child.data.tags["dlrun.config_hash"]) == 16
    assert done.data.tags["dlrun.config_hash"] != failed.data.tags["dlrun.config_hash"]
    assert missing in failed.data.tags["dlrun.error"]
    assert {"val/acc", "test/acc"} <= set(done.data.metrics)
    assert done.data.params["paths.data_dir"] == "real"

    # The parent carries the sweep's arguments, the best job and the table.
    assert parent.info.status == "FAILED"
    assert parent.data.params["paths.data_dir"] == f"real,{nowhere}"
    assert data_dirs in parent.data.tags["dlrun.sweep_args"]
    assert parent.data.tags["dlrun.best_run_id"] == done.info.run_id
    assert parent.data.metrics["val/acc"] == pytest.approx(done.data.metrics["val/acc"])
    table = artifact_text(uri, parent.info.run_id, "sweep_table.txt", tmp_path / "a1")
    assert done.info.run_id in table and failed.info.run_id in table
    assert "FAILED: " in table and "(download" in table  # the job's one-line error, wrapped in the table
    assert failed.info.run_id in first.stdout and done.info.run_id in first.stdout

    # Same command again (in-process launcher this time): the finished job is skipped, the failed one reruns.
    assert second.returncode == 1, second.describe()
    parents2, children2 = split_runs(uri)
    assert len(parents2) == 2
    assert sorted(r.info.status for r in children2) == ["FAILED", "FAILED", "FINISHED"]
    new_parent = next(p for p in parents2 if p.info.run_id != parent.info.run_id)
    jobs = json.loads(artifact_text(uri, new_parent.info.run_id, "sweep_jobs.json", tmp_path / "a2"))
    assert [(j["num"], j["status"], j["reused_run_id"]) for j in jobs] == [
        (0, "SKIPPED", done.info.run_id),
        (1, "FAILED", None),
    ]
    assert jobs[0]["value"] == pytest.approx(done.data.metrics["val/acc"])
    assert f"skipped, done in {done.info.run_id}" in second.stdout


def test_optuna_search_trials_are_child_runs(started: Started) -> None:
    result = started["optuna"]
    uri = store_uri(result.cwd)
    assert result.returncode == 0, result.describe()
    parents, children = split_runs(uri)
    assert len(parents) == 1 and len(children) == 2
    # The distribution trials draw from (the preset's tag(log, interval(1e-4, 1e-2))), as Optuna writes it.
    lr = parents[0].data.params["search.optimizer.lr"]
    assert lr == "FloatDistribution(high=0.01, log=True, low=0.0001, step=None)"
    assert parents[0].data.tags["dlrun.sweeper"] == "optuna"
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.params["optimizer.lr"] for c in children}) == 2  # the sampler proposed two points
    # What each job returned to Optuna is the val/acc its run recorded.
    results = yaml.safe_load(next(result.cwd.glob("multirun/*/*/optimization_results.yaml")).read_text())
    assert results["best_value"] == pytest.approx(max(c.data.metrics["val/acc"] for c in children))


WRITER = r"""
import sys
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from dlrun.tracking.sqlite import prepare_sqlite
from dlrun.tracking.store import get_or_create_experiment

uri, worker = sys.argv[1], int(sys.argv[2])
prepare_sqlite(uri)  # all four start on a file that does not exist yet
client = MlflowClient(uri)
experiment = get_or_create_experiment(client, "stress", None)
for r in range(2):
    run = client.create_run(experiment, run_name=f"w{worker}-{r}").info.run_id
    client.log_batch(run, params=[Param(f"p{i}", str(i)) for i in range(50)])
    for step in range(25):
        client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
    client.log_batch(run, metrics=[Metric(f"m{i}", float(i), 0, 0) for i in range(20)])
    client.set_tag(run, "worker", str(worker))
    client.set_terminated(run, "FINISHED")
"""


def test_four_concurrent_writers_on_a_new_sqlite_store_lose_nothing(started: Started) -> None:
    uri, outcomes = started["writers"]
    for code, out in outcomes:
        assert code == 0, out[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = all_runs(uri)
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert len(run.data.params) == 50 and len(run.data.metrics) == 21
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 25


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path: Path) -> None:
    uri = store_uri(tmp_path)
    result = dlrun(
        ["-m", "hydra/launcher=submitit_local", "model=mlp,cnn", *LIMITS[:-3], f"tracking.uri={uri}"], tmp_path
    )
    assert result.returncode == 0, result.describe()
    parents, children = split_runs(uri)
    assert len(parents) == 1 and sorted(c.data.params["model._target_"] for c in children) == [
        "dlrun.models.cnn.CNN",
        "dlrun.models.mlp.MLP",
    ]
    assert all(c.info.status == "FINISHED" for c in children)
    assert parents[0].data.tags["dlrun.launcher"] == "submitit_local"


# ---- pieces, without a process


def test_config_hash_ignores_the_output_dir_only() -> None:
    config = {"paths": {"output_dir": "/a", "data_dir": "/d"}, "optimizer": {"lr": 0.001}}
    moved = {"paths": {"output_dir": "/b", "data_dir": "/d"}, "optimizer": {"lr": 0.001}}
    changed = {"paths": {"output_dir": "/a", "data_dir": "/d"}, "optimizer": {"lr": 0.002}}
    assert config_hash(config) == config_hash(moved)
    assert config_hash(config) != config_hash(changed)
    assert config["paths"]["output_dir"] == "/a"  # the caller's dict is left alone


def test_table_marks_the_best_finished_job_and_lists_shared_overrides_once() -> None:
    rows = [
        JobRow(0, ["model=mlp", "seed=1"], "FINISHED", 0.91, run_id="r0"),
        JobRow(1, ["model=cnn", "seed=1"], "SKIPPED", 0.95, reused_run_id="old"),
        JobRow(2, ["model=big", "seed=1"], "FAILED", None, run_id="r2", error="ValueError: boom"),
    ]
    assert best_row(rows, "max") is rows[1]
    assert best_row(rows, "min") is rows[0]
    assert common_overrides(rows) == ["seed=1"]
    text = table_text(sweep_table(rows, "val/acc", "max", "sweep x"), width=200)
    assert "skipped, done in old" in text and "FAILED: ValueError: boom" in text
    assert "1 *" in text and "every job also had: seed=1" in text


def test_job_records_of_other_sweeps_are_ignored(tmp_path: Path) -> None:
    for num, sweep_id in ((0, "mine"), (1, "mine"), (2, "older")):
        folder = tmp_path / str(num)
        folder.mkdir()
        record = {"sweep_id": sweep_id, "num": num, "overrides": [], "status": "FINISHED", "value": 0.5}
        (folder / "dlrun_job.json").write_text(json.dumps(record))
    assert [r.num for r in job_rows(tmp_path, Sweep("mine"))] == [0, 1]


def test_failed_jobs_return_a_one_line_non_number() -> None:
    from dlrun.errors import ConfigError

    assert JobFailed.of(ValueError("bad\n  value")).error == "ValueError: bad value"
    assert JobFailed.of(ConfigError("optimizer.lr: must be > 0")).error == "optimizer.lr: must be > 0"
    # What the sweeper makes of a job that returned it: a FAILED trial carrying the line, the search goes on.
    from hydra.core.utils import JobReturn, JobStatus
    from optuna.trial import TrialState

    from dlrun.sweeping.sweeper import outcome

    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=JobFailed.of(ConfigError("optimizer.lr: must be > 0")))
    assert outcome(ret) == (TrialState.FAIL, None, "optimizer.lr: must be > 0")
    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=0.25)
    assert outcome(ret) == (TrialState.COMPLETE, 0.25, None)


def test_a_sweep_with_tracking_off_runs_where_mlflow_is_not_installed(started: Started) -> None:
    result = started["no_mlflow"]
    assert result.returncode == 0, result.describe()
    assert "2 jobs, 0 failed" in result.stdout
    records = sorted(result.cwd.glob("multirun/*/*/*/dlrun_job.json"))
    assert [json.loads(p.read_text())["status"] for p in records] == ["FINISHED", "FINISHED"]
