"""Crash, interrupt and resume: a training process killed with SIGKILL, then SIGTERM, finishes as ONE MLflow run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers import dlrun_env, early

EPOCH_STEPS = 100
EPOCHS = 3


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "dlrun", *args], cwd=cwd, env=dlrun_env(), stdout=handle, stderr=subprocess.STDOUT
    )


def _wait_until(condition: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Poll ``condition`` while ``proc`` runs; fail with its log if it ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"dlrun ended (rc {proc.returncode}) before the awaited point:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting:\n{log.read_text()[-3000:]}")


def _history(client, run_id: str, key: str) -> list:
    return client.get_metric_history(run_id, key)


def test_sigkill_then_sigterm_then_resume_is_one_run(early_result: Callable) -> None:
    """kill -9 after epoch 1, resume=RUN_ID, SIGTERM after epoch 2 (KILLED, exit 143), rerun in the
    same run dir: one FINISHED run with every epoch once and no repeated metric step."""
    early_result(killed_twice_and_resumed)  # its checks run with it, from the session's start (helpers.early)


@early
def killed_twice_and_resumed(tmp_path: Path) -> None:
    """The whole scenario with its checks: three processes one after the other, one core busy for half a minute."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    run_dir = tmp_path / "run"
    args = [
        "model=mlp",
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.limit_train_batches={EPOCH_STEPS}",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=10",
        "tracking.log_model=false",
        "callbacks.plots=false",
        f"tracking.uri={uri}",
    ]
    client = MlflowClient(tracking_uri=uri)
    found: dict[str, str] = {}

    def epochs_logged(n: int) -> Callable[[], bool]:
        def check() -> bool:
            if "run_id" not in found:
                if not (tmp_path / "m.db").exists():
                    return False
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
                if not runs:
                    return False
                found["run_id"] = runs[0].info.run_id
            # train/samples_per_s is logged last in an epoch, after its checkpoint.
            return len(_history(client, found["run_id"], "train/samples_per_s")) >= n

        return check

    procs: list[subprocess.Popen] = []
    try:
        # 1. Killed without warning after its first epoch: the run stays RUNNING, last.ckpt holds epoch 1.
        first = _start([*args, f"hydra.run.dir={run_dir}"], tmp_path, tmp_path / "first.log")
        procs.append(first)
        _wait_until(epochs_logged(1), first, tmp_path / "first.log")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        run_id = found["run_id"]
        assert client.get_run(run_id).info.status == "RUNNING"

        # 2. Resumed by run id (into the run's own dir), then stopped with SIGTERM during epoch 3.
        second = _start(
            [*args, f"resume={run_id}", f"hydra.run.dir={tmp_path / 'second'}"], tmp_path, tmp_path / "second.log"
        )
        procs.append(second)
        _wait_until(epochs_logged(2), second, tmp_path / "second.log")
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 143, (tmp_path / "second.log").read_text()[-3000:]
        log = (tmp_path / "second.log").read_text()
        assert f"resuming of run {run_id}" in log
        assert "dlrun: error: interrupted by SIGTERM; the run was marked KILLED" in log
        assert client.get_run(run_id).info.status == "KILLED"
        saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert saved["dlrun"]["run_id"] == run_id
        assert saved["global_step"] >= 2 * EPOCH_STEPS  # the interrupt's checkpoint, past epoch 2

        # 3. Rerun in the same run dir: continues from that checkpoint to the configured epoch count.
        third = subprocess.run(
            [sys.executable, "-m", "dlrun", *args, f"hydra.run.dir={run_dir}"],
            cwd=tmp_path,
            env=dlrun_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert third.returncode == 0, third.stderr[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert "dlrun.resumed_from" in run.data.tags
    last_step = EPOCHS * EPOCH_STEPS - 1
    for key in ("val/acc", "val/loss", "train/samples_per_s"):
        steps = [m.step for m in _history(client, run_id, key)]
        assert steps == [(e + 1) * EPOCH_STEPS - 1 for e in range(EPOCHS)], (key, steps)
    train_steps = [m.step for m in _history(client, run_id, "train/loss")]
    assert train_steps == list(range(9, last_step + 1, 10))  # every logged step once, none missing
    assert [m.step for m in _history(client, run_id, "test/acc")] == [EPOCHS * EPOCH_STEPS]
    assert max(m.value for m in _history(client, run_id, "epoch")) == EPOCHS
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == EPOCHS * EPOCH_STEPS and final["epoch"] == EPOCHS - 1
    assert final["optimizer_states"][0]["state"]  # Adam moments travelled through both restarts
