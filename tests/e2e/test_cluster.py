"""Training beyond one process as clusters start it: two nodes started one by one (one MLflow run, one folder),
a SLURM job preempted and requeued (same run, same folder, no step twice), SIGTERM then ``resume=RUN_DIR``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers import all_runs, dlrun, dlrun_env, dlrun_start, early, free_port, store_uri

EPOCH_STEPS = 100
EPOCHS = 3
QUIET = ["tracking.log_model=false", "tracking.capsule=false", "callbacks.plots=false", "trainer.limit_val_batches=2"]
LONG = [
    *QUIET,
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.limit_train_batches={EPOCH_STEPS}",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=10",
]
# What srun sets in a one-task job; SLURM_RESTART_COUNT is added when SLURM starts the job again.
SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}

# two-node DDP, a requeued SLURM job and a SIGTERM resume: six dlrun processes (about 50 s of two cores);
# tests/unit/test_cluster_env.py stays in the default suite
pytestmark = pytest.mark.slow


def history(uri: str, run_id: str, key: str) -> list[int]:
    """The steps at which ``key`` was recorded, in order."""
    from mlflow.tracking import MlflowClient

    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


def run_folders(cwd: Path) -> list[Path]:
    """The Hydra run folders made under ``cwd/outputs`` (outputs/DATE/TIME)."""
    return sorted((cwd / "outputs").glob("*/*"))


def test_two_nodes_started_one_by_one_make_one_run_in_one_folder(tmp_path: Path) -> None:
    uri = store_uri(tmp_path)
    args = [
        *QUIET,
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=2",
        f"tracking.uri={uri}",
    ]
    cluster = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    # Node 1 first: it waits for node 0 to say where the run lives.
    nodes = dlrun_start({n: (args, tmp_path, {**cluster, "NODE_RANK": str(n)}) for n in (1, 0)})
    node0, node1 = nodes[0].result(), nodes[1].result()
    assert node0.returncode == 0, node0.describe()
    assert node1.returncode == 0, node1.describe()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in node1.stdout + node1.stderr

    (run,) = all_runs(uri)
    assert run.info.status == "FINISHED"
    run_id = run.info.run_id
    # Rank 0 of node 0 keeps the books: every epoch's and every logged step's value once.
    assert history(uri, run_id, "val/acc") == [3, 7]
    assert history(uri, run_id, "train/loss") == [1, 3, 5, 7]
    assert history(uri, run_id, "test/acc") == [8]
    (folder,) = run_folders(tmp_path)  # node 1 made no folder of its own
    assert run.data.tags["dlrun.output_dir"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == [".hydra", "checkpoints", "cli.log", "train_node_1.log"]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["epoch001.ckpt", "last.ckpt"]


def stopped_during_epoch_2(procs: list[subprocess.Popen], log: Path, signum: int) -> list[int]:
    """Send ``signum`` to every process once epoch 1's line is in ``log``; their exit codes."""
    deadline = time.monotonic() + 240
    try:
        while f"epoch 1/{EPOCHS}" not in log.read_text():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dlrun ended or hung before epoch 1:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        for proc in procs:
            proc.send_signal(signum)
        return [proc.wait(120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_one_run_trained_once(uri: str, run_id: str) -> None:
    """One FINISHED run holding each epoch and each logged training step exactly once."""
    (run,) = all_runs(uri)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    for key in ("val/acc", "train/samples_per_s"):
        assert history(uri, run_id, key) == [(e + 1) * EPOCH_STEPS - 1 for e in range(EPOCHS)], key
    assert history(uri, run_id, "train/loss") == list(range(9, EPOCHS * EPOCH_STEPS, 10))
    assert history(uri, run_id, "test/acc") == [EPOCHS * EPOCH_STEPS]


def test_preempted_slurm_job_is_requeued_and_continues_its_run(early_result: Callable) -> None:
    early_result(preempted_and_requeued)  # two processes one after the other, from the session's start


@pytest.mark.slow
def test_preempted_slurm_job_with_two_ranks_stops_both_after_the_same_step(tmp_path: Path) -> None:
    preempted_and_requeued(tmp_path, tasks=2)


def start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``dlrun ARGS`` in the background, its output in ``log``."""
    with log.open("w") as handle:
        command = [sys.executable, "-m", "dlrun", *args]
        return subprocess.Popen(command, cwd=cwd, env=dlrun_env(env), stdout=handle, stderr=subprocess.STDOUT)


def srun_tasks(args: list[str], cwd: Path, env: dict[str, str], tasks: int) -> list[subprocess.Popen]:
    """``dlrun ARGS`` as ``srun`` starts it: one process per task, SLURM_PROCID 0..tasks-1, output in taskN.log."""
    ranks = [{"SLURM_PROCID": str(task), "SLURM_LOCALID": str(task)} for task in range(tasks)]
    # Rank 0 last: the others wait for it.
    procs = [start(args, cwd, {**env, **ranks[t]}, cwd / f"task{t}.log") for t in reversed(range(tasks))]
    return procs[::-1]


@early
def preempted_and_requeued(tmp_path: Path, tasks: int = 1) -> None:
    """SIGUSR1 to every task during epoch 2 under SLURM, then the job started again: one run, one folder,
    each step once. With 2 tasks: 2 DDP ranks over gloo, which must stop after the same step."""
    uri = store_uri(tmp_path)
    scontrol = tmp_path / "bin" / "scontrol"  # stands in for SLURM's: records the requeue it is asked for
    scontrol.parent.mkdir()
    scontrol.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n')
    scontrol.chmod(0o755)
    env = {**SLURM, "SLURM_NTASKS": str(tasks), "SLURM_NTASKS_PER_NODE": str(tasks)}
    env["PATH"] = f"{scontrol.parent}:{dlrun_env()['PATH']}"
    ddp = ["trainer=ddp_cpu", f"trainer.devices={tasks}"] if tasks > 1 else []
    args = [*LONG, *ddp, f"tracking.uri={uri}"]

    def srun(extra: dict[str, str]) -> list[subprocess.Popen]:
        return srun_tasks(args, tmp_path, {**env, **extra, "MASTER_PORT": str(free_port())}, tasks)

    codes = stopped_during_epoch_2(srun({}), tmp_path / "task0.log", signal.SIGUSR1)
    assert codes == [128 + signal.SIGUSR1] * tasks, (tmp_path / "task0.log").read_text()[-3000:]
    assert (scontrol.parent / "calls").read_text() == "requeue 4242\n"
    (run,) = all_runs(uri)
    assert run.info.status == "KILLED" and run.data.tags["dlrun.slurm_job_id"] == "4242"
    (folder,) = run_folders(tmp_path)
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["dlrun"]["run_id"] == run.info.run_id and saved["global_step"] >= EPOCH_STEPS

    # SLURM starts the same job again: same id, same command, SLURM_RESTART_COUNT=1.
    again = srun({"SLURM_RESTART_COUNT": "1"})
    assert [proc.wait(300) for proc in again] == [0] * tasks, (tmp_path / "task0.log").read_text()[-3000:]
    resumed = f"resuming of run {run.info.run_id} from {folder / 'checkpoints' / 'last.ckpt'}"
    assert resumed in (tmp_path / "task0.log").read_text()
    assert run_folders(tmp_path) == [folder]  # the same output folder, no second one
    assert_one_run_trained_once(uri, run.info.run_id)
    assert (scontrol.parent / "calls").read_text() == "requeue 4242\n"


def test_sigterm_leaves_a_run_that_resume_finishes(early_result: Callable) -> None:
    early_result(terminated_and_resumed)


@early
def terminated_and_resumed(tmp_path: Path) -> None:
    """SIGTERM during epoch 2 outside SLURM, then ``resume=RUN_DIR``: one run, each step once."""
    uri = store_uri(tmp_path)
    args = [*LONG, f"tracking.uri={uri}"]
    log = tmp_path / "first.log"
    (code,) = stopped_during_epoch_2([start(args, tmp_path, {}, log)], log, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, log.read_text()[-3000:]
    (run,) = all_runs(uri)
    assert run.info.status == "KILLED"
    (folder,) = run_folders(tmp_path)
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] >= EPOCH_STEPS

    resumed = dlrun([*args, f"resume={folder}"], tmp_path)
    assert resumed.returncode == 0, resumed.describe()
    assert_one_run_trained_once(uri, run.info.run_id)
