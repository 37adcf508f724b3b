"""Plain Lightning code as a new user writes it, through the installed console script from a folder of its own.

The pair differs from ``examples/plain_lightning`` the ways users' code differs: the module names no monitor,
logs no ``val/loss`` and has no example input; the data module reads MNIST's IDX files itself. Both are
wired with two conf files, as docs/extending.md says. Each test asserts the MLflow records, not "it ran".
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from helpers import MNIST, Result, all_runs, dlrun_env, store_uri

DLRUN = Path(sys.executable).parent / "dlrun"

MODULE = """
import gzip
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _read(folder, stem, n):
    with gzip.open(Path(folder) / f"{stem}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(Path(folder) / f"{stem}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read()[8:], dtype=np.uint8)[:n]
    return TensorDataset(torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.long))


class Digits(pl.LightningDataModule):
    def __init__(self, folder: str, batch: int = 64):
        super().__init__()
        self.folder, self.batch = folder, batch

    def setup(self, stage=None):
        self.train = _read(self.folder, "train", 1024)
        self.test = _read(self.folder, "t10k", 256)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.test, batch_size=256)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=256)


class Reader(pl.LightningModule):
    def __init__(self, lr: float = 1e-3, width: int = 32, broken: bool = False):
        super().__init__()
        if broken:
            raise RuntimeError("cannot set up the reader")
        self.lr = lr
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self(x).argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)
"""
SHORT = ["trainer.limit_train_batches=4", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder outside the repository: one module, two conf files."""
    folder = tmp_path_factory.mktemp("plain_project")
    (folder / "reader.py").write_text(MODULE, encoding="utf-8")
    (folder / "conf" / "data").mkdir(parents=True)
    (folder / "conf" / "objective").mkdir(parents=True)
    (folder / "conf" / "data" / "digits.yaml").write_text(f"_target_: reader.Digits\nfolder: {MNIST}\nbatch: 64\n")
    (folder / "conf" / "objective" / "reader.yaml").write_text("_target_: reader.Reader\nlr: 0.002\nwidth: 32\n")
    return folder


def run(args: list[str], cwd: Path, store: str) -> Result:
    import subprocess

    flags = [a for a in args if a == "-m"]  # Hydra's -m goes before the overrides
    rest = [a for a in args if a != "-m"]
    full = [*flags, "data=digits", "objective=reader", f"tracking.uri={store}", "tracking.log_model=false", *rest]
    proc = subprocess.run([str(DLRUN), *full], cwd=cwd, env=dlrun_env(), capture_output=True, text=True, timeout=300)
    return Result(full, cwd, proc.returncode, proc.stdout, proc.stderr)


def snapshot(uri: str) -> dict:
    """Every run's status, end time, params, tags and metric histories: what a failing command must not change."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {
        r.info.run_id: (
            r.info.status,
            r.info.end_time,
            r.data.params,
            r.data.tags,
            {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics},
        )
        for r in all_runs(uri)
    }


def test_without_a_monitor_the_last_epoch_is_kept_and_callbacks_come_from_config(project: Path, tmp_path: Path) -> None:
    store = store_uri(tmp_path)
    result = run(["trainer.max_epochs=2", "callbacks=[default,lr_monitor]", *SHORT], project, store)
    assert result.returncode == 0, result.describe()
    notes = [line for line in result.stderr.splitlines() if "names no monitor" in line]
    assert len(notes) == 1 and "checkpoints keep the last epoch" in notes[0], result.stderr
    [finished] = all_runs(store)
    assert finished.info.status == "FINISHED"
    assert finished.info.run_name == "digits-reader"  # the parts used: no model group was built
    assert not {"model", "optimizer", "scheduler"} & {k.split(".")[0] for k in finished.data.params}
    assert "dlrun.monitor" not in finished.data.tags
    assert 0.0 <= finished.data.metrics["test/acc"] <= 1.0
    assert "lr-Adam" in finished.data.metrics  # LearningRateMonitor, from conf/callbacks/lr_monitor.yaml
    import torch

    [last] = (Path(finished.data.tags["dlrun.output_dir"]) / "checkpoints").glob("*.ckpt")
    assert last.name == "last.ckpt" and torch.load(last, weights_only=True)["global_step"] == 8  # 2 epochs x 4


def test_a_monitor_the_module_never_logs_stops_before_the_first_epoch(project: Path, tmp_path: Path) -> None:
    store = store_uri(tmp_path)
    result = run(["checkpoint.monitor=val/loss", "checkpoint.mode=min", *SHORT], project, store)
    assert result.returncode == 2, result.describe()
    assert (
        result.error
        == "checkpoint.monitor: Reader never logs 'val/loss'; it logs val/acc (set checkpoint.monitor to one of them)"
    )
    [failed] = all_runs(store)
    assert failed.info.status == "FAILED" and failed.data.tags["dlrun.error"].endswith(result.error)
    assert "train/loss" not in failed.data.metrics and "epoch" not in failed.data.metrics  # no step was taken


def test_summary_without_an_example_input_shows_layers_and_parameters(project: Path, tmp_path: Path) -> None:
    result = run(["task=summary"], project, store_uri(tmp_path))
    assert result.returncode == 0, result.describe()
    assert (
        "body.1" in result.stdout and "25,120" in result.stdout and "body.3" in result.stdout and "330" in result.stdout
    )
    assert "25,450 parameters" in result.stdout.replace("\n", " ")


def test_an_optuna_search_over_the_objective_group_reports_and_reruns(project: Path, tmp_path: Path) -> None:
    store = store_uri(tmp_path)
    args = [
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=2",
        "objective.lr=tag(log, interval(1e-4, 1e-2))",
        "checkpoint.monitor=val/acc",
        "checkpoint.mode=max",
        "trainer.max_epochs=1",
        *SHORT,
    ]
    result = run(args, project, store)
    assert result.returncode == 0, result.describe()
    [parent] = [r for r in all_runs(store) if r.data.tags.get("dlrun.task") == "sweep"]
    trials = [r for r in all_runs(store) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    best = max(trials, key=lambda r: r.data.metrics["val/acc"])
    assert parent.info.status == "FINISHED"
    assert float(parent.data.tags["dlrun.best.val/acc"]) == pytest.approx(best.data.metrics["val/acc"])
    command = parent.data.tags["dlrun.best_command"]
    assert " objective=reader" in command and " model=" not in command and " optimizer=" not in command
    [best_yaml] = Path(parent.data.tags["dlrun.output_dir"]).glob("best.yaml")
    preset = yaml.safe_load(best_yaml.read_text())
    assert {"override /objective": "reader"} in preset["defaults"] and {"override /data": "digits"} in preset[
        "defaults"
    ]
    assert preset["objective"]["lr"] == pytest.approx(float(parent.data.tags["dlrun.best.objective.lr"]))
    (project / "experiments").mkdir(exist_ok=True)
    shutil.copy(best_yaml, project / "experiments" / "best_reader.yaml")
    again = run(["experiment=best_reader"], project, store)
    assert again.returncode == 0, again.describe()
    rerun = next(r for r in all_runs(store) if r.info.run_name == "best_reader")
    assert float(rerun.data.params["objective.lr"]) == pytest.approx(preset["objective"]["lr"])


def test_a_search_without_a_known_mode_stops_before_any_run(project: Path, tmp_path: Path) -> None:
    store = store_uri(tmp_path)
    result = run(["-m", "hydra/sweeper=optuna", "objective.lr=interval(1e-4, 1e-2)", *SHORT], project, store)
    assert result.returncode == 2, result.describe()
    assert result.error.startswith("hydra.sweeper.direction: the objective names no mode")
    assert all_runs(store) == []


def test_user_code_errors_name_cause_file_and_line_before_any_run(project: Path, tmp_path: Path) -> None:
    store = store_uri(tmp_path)
    broken = run(["+objective.broken=true"], project, store)
    assert broken.returncode == 2, broken.describe()
    assert (
        broken.error
        == f"objective: Reader() raised RuntimeError: cannot set up the reader at {project / 'reader.py'}:44"
    )
    (project / "typo.py").write_text("import torch\nclass Net:\n    def f(self)\n        pass\n")
    syntax = run(["objective._target_=typo.Net"], project, store)
    assert (
        syntax.returncode == 2
        and syntax.error
        == f"objective._target_: cannot import 'typo.Net': SyntaxError at {project / 'typo.py'}:3: expected ':'"
    )
    (project / "needs.py").write_text("import not_a_package_xyz\nclass Net: ...\n")
    missing = run(["objective._target_=needs.Net"], project, store)
    cause = f"'not_a_package_xyz' is not installed (imported at {project / 'needs.py'}:1)"
    assert missing.error == f"objective._target_: cannot import 'needs.Net': {cause}"
    assert all_runs(store) == []  # every one stopped before a run opened
