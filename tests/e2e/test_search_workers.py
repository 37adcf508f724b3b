"""Many search processes on one study (issue 22, points 2-3): started at the same moment they finish exactly
``n_trials`` together under one MLflow parent; a worker SIGKILLed mid-trial leaves its trial to the others,
which mark it FAIL (Optuna) and FAILED (MLflow) once its heartbeat stops, and finish the study.

Real ``dlrun`` processes, real SQLite and journal-file studies, a real MLflow store, tiny MNIST trainings.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest

from helpers import DATA, REPO, Result, all_runs, dlrun, dlrun_start, store_uri

PARENT = "mlflow.parentRunId"
USER_CODE = str(REPO / "tests" / "user_callbacks")  # kill_trial.KillDuringTrial: SIGKILL during a trial
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [USER_CODE, os.environ.get("PYTHONPATH")]))}
KILL = [
    "+callbacks.kill._target_=kill_trial.KillDuringTrial",
    "+callbacks.kill.at_trial=any",
    "+callbacks.kill.trial=${oc.select:trial.number,null}",
]
STORAGES = {"sqlite": "sqlite:///optuna.db", "journal": "journal://study.log"}
# A PostgreSQL database for Optuna, when one is at hand (dlrun's CI has none): DLRUN_TEST_POSTGRES_URL=postgresql://...
POSTGRES = os.environ.get("DLRUN_TEST_POSTGRES_URL")
if POSTGRES:
    STORAGES["postgresql"] = POSTGRES
ON = [pytest.param(k, marks=pytest.mark.skipif(k == "postgresql" and not POSTGRES, reason="no DLRUN_TEST_POSTGRES_URL"))
      for k in ("sqlite", "journal", "postgresql")]  # fmt: skip


def search(folder: Path, storage: str, n_trials: int, *extra: str) -> list[str]:
    """A seeded TPE search over the learning rate, one-epoch trials of two batches, heartbeats every second."""
    return [
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.direction=maximize",
        f"hydra.sweeper.study_name={folder.name}",  # one database may hold the studies of several tests
        f"hydra.sweeper.storage={STORAGES[storage]}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=4",
        "optimized_metric=val/acc",
        "optimizer.lr=tag(log,interval(1e-4,1e-2))",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.eval_batch_size=500",
        "model.hidden_sizes=[32]",
        "tracking.log_model=false",
        "callbacks.plots=false",
        f"paths.data_dir={DATA}",
        f"tracking.uri={store_uri(folder)}",
        *extra,
    ]


def load(folder: Path, storage: str):
    import optuna

    from dlrun.sweeping.study import open_storage, storage_url

    url = storage_url(STORAGES[storage], None, folder)
    return optuna.load_study(study_name=folder.name, storage=open_storage(url))


def together(*jobs: tuple[list[str], Path, dict | None]) -> list[Result]:
    """Start the commands at the same moment, wait for all."""
    futures = dlrun_start({str(i): job for i, job in enumerate(jobs)}, workers=len(jobs))
    return [futures[str(i)].result() for i in range(len(jobs))]


def parent_id(result: Result) -> str:
    found = re.findall(r"parent run ([0-9a-f]{32})", result.stdout)
    assert len(found) == 1, result.describe()
    return found[0]


def check_records(folder: Path, storage: str, n_trials: int) -> tuple[list, dict]:
    """The study has exactly ``n_trials`` finished trials, each with one MLflow run under the study's one parent."""
    from optuna.trial import TrialState

    trials = [t for t in load(folder, storage).trials if "dlrun.unused" not in t.user_attrs]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    runs = all_runs(store_uri(folder))
    parents = [r for r in runs if PARENT not in r.data.tags]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    by_trial: dict[int, object] = {}
    for run in runs:
        if PARENT in run.data.tags:
            assert run.data.tags[PARENT] == parents[0].info.run_id
            number = int(run.data.tags["dlrun.trial"])
            assert number not in by_trial, f"trial {number} has two runs"
            by_trial[number] = run
    assert sorted(by_trial) == sorted(t.number for t in trials)
    # Per-trial seeds: no two trials of the workers drew the same learning rate.
    assert len({t.params["optimizer.lr"] for t in trials}) == len(trials)
    return trials, by_trial


@pytest.mark.slow
@pytest.mark.parametrize("storage", ON)
def test_two_workers_started_together_finish_n_trials_under_one_parent(tmp_path: Path, storage: str) -> None:
    args = search(tmp_path, storage, 4)
    first, second = together((args, tmp_path, None), (args, tmp_path, None))
    for result in (first, second):
        assert result.returncode == 0, result.describe()
    assert parent_id(first) == parent_id(second)  # the race for the parent: one winner, the other continued it
    trials, runs = check_records(tmp_path, storage, 4)
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    # Both processes ran trials (each job's output folder is in its own process's sweep directory).
    folders = {Path(r.data.tags["dlrun.output_dir"]).parent for r in runs.values()}
    assert len(folders) == 2, folders


@pytest.mark.slow
@pytest.mark.parametrize("storage", ON)
def test_a_worker_killed_mid_trial_leaves_the_other_to_fail_its_trial_and_finish(tmp_path: Path, storage: str) -> None:
    args = search(tmp_path, storage, 3)
    killed, survivor = together(([*args, *KILL], tmp_path, ENV), (args, tmp_path, ENV))
    assert killed.returncode == -9, killed.describe()
    assert survivor.returncode == 0, survivor.describe()
    trials, runs = check_records(tmp_path, storage, 3)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1, [(t.number, t.state.name) for t in trials]
    dead = runs[failed[0].number]
    assert dead.info.status == "FAILED" and "stopped during this trial" in dead.data.tags["dlrun.error"]
    assert {runs[t.number].info.status for t in trials if t is not failed[0]} == {"FINISHED"}
    assert "stopped during this trial" in survivor.stdout  # the survivor's table shows why
    assert f"study {tmp_path.name}: 4 trials: 3 COMPLETE, 0 PRUNED, 1 FAIL" in survivor.stdout


@pytest.mark.slow
def test_k_workers_on_this_machine_share_the_search(tmp_path: Path) -> None:
    result = dlrun(search(tmp_path, "sqlite", 4, "hydra.sweeper.workers=2"), tmp_path)
    assert result.returncode == 0, result.describe()
    assert "started 1 more workers on this study" in result.stdout
    trials, runs = check_records(tmp_path, "sqlite", 4)
    # Worker 1 wrote its output beside the trials, in the same sweep directory, and ran some of them.
    logs = list(tmp_path.glob("multirun/*/*/workers/1.log"))
    assert len(logs) == 1
    theirs = {int(n) for n in re.findall(r"\+trial\.number=(\d+)", logs[0].read_text())}
    ours = {int(n) for n in re.findall(r"\+trial\.number=(\d+)", result.stdout)}
    assert theirs and ours and theirs.isdisjoint(ours) and theirs | ours == set(runs), (theirs, ours)
    assert {Path(r.data.tags["dlrun.output_dir"]).parent for r in runs.values()} == {logs[0].parent.parent}
    assert f"study {tmp_path.name}: 4 trials: 4 COMPLETE" in result.stdout  # worker 0's table: the whole study


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_the_command_started(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from helpers import dlrun_env

    # Trials of 3 epochs of 400 batches: the study cannot be done before the interrupt has reached everyone.
    args = search(tmp_path, "sqlite", 6, "hydra.sweeper.workers=2", "trainer.limit_train_batches=400")
    args = [*args, "trainer.max_epochs=3"]
    command = subprocess.Popen(
        [sys.executable, "-m", "dlrun", *args], cwd=tmp_path, env=dlrun_env(), stdout=subprocess.PIPE, text=True
    )
    deadline, training = time.monotonic() + 240, 0
    while time.monotonic() < deadline and training < 2:
        time.sleep(1)  # until both workers train a trial (a trial's run id is on it once its training starts)
        if (tmp_path / "optuna.db").exists():
            with contextlib.suppress(Exception):  # the study may not exist yet
                training = sum("mlflow_run_id" in t.user_attrs for t in load(tmp_path, "sqlite").trials)
    assert training == 2, "the two workers never trained at the same time"
    command.send_signal(signal.SIGINT)
    out, _ = command.communicate(timeout=180)
    logs = list(tmp_path.glob("multirun/*/*/workers/1.log"))
    assert command.returncode == 130, out[-3000:]
    assert "exited with 130" in out, out[-3000:] + logs[0].read_text()[-3000:]  # worker 1 was interrupted too
    finished = [t for t in load(tmp_path, "sqlite").trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) < 6  # stopped, not run on to the end by a worker left behind
