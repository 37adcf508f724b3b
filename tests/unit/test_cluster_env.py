"""What dlrun reads from the variables clusters set: the SLURM job and its requeue, and whether a rank's peers
were started by a cluster (then it joins rank 0's run dir) or by Lightning."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrun.callbacks import slurm
from dlrun.tasks.ddp import cluster_started, rank_name

CLUSTER_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_RESTART_COUNT",
    "SLURM_NTASKS",
    "SLURM_JOB_NAME",
    "SLURM_PROCID",
    "WORLD_SIZE",
    "RANK",
    "NODE_RANK",
    "LOCAL_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
)


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLUSTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_slurm_job_id_and_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert slurm.job_id() is None and not slurm.restarted()
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert slurm.job_id() == "4242" and not slurm.restarted()
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4200")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert slurm.job_id() == "4200_7"  # what scontrol requeue takes for an array task
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert not slurm.restarted()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert slurm.restarted()


def fake_scontrol(folder: Path, exit_code: int) -> Path:
    script = folder / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{folder}/calls"\necho "denied" >&2\nexit {exit_code}\n')
    script.chmod(0o755)
    return folder / "calls"


def test_requeue_calls_scontrol_and_says_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    calls = fake_scontrol(tmp_path, 0)
    assert not slurm.requeue() and not calls.exists()  # outside SLURM: nothing to requeue
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert slurm.requeue() and calls.read_text() == "requeue 4242\n"
    fake_scontrol(tmp_path, 1)
    assert not slurm.requeue()
    assert "dlrun: scontrol requeue 4242 failed: denied" in capsys.readouterr().err


def test_ranks_started_by_a_cluster_or_by_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not cluster_started(1) and rank_name() == "node_0"
    monkeypatch.setenv("WORLD_SIZE", "2")  # Lightning's own children of a one-node job
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not cluster_started(1)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("NODE_RANK", "1")  # a second machine, started by hand
    assert cluster_started(2) and rank_name() == "node_1"
    monkeypatch.delenv("NODE_RANK")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert cluster_started(1) and rank_name() == "rank_3"  # srun tasks on one node
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # Lightning ignores SLURM in an interactive job
    assert not cluster_started(1)
