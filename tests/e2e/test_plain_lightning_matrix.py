"""Plain Lightning code as a new user writes it, through the installed console script from a folder of its own.

The pair differs from ``examples/plain_lightning`` the ways users' code differs: the module names no monitor,
logs no ``val/loss`` and has no example input; the data module reads MNIST's IDX files itself. Both are
wired with two conf files, as docs/extending.md says. Each test asserts the MLflow records, not "it ran".
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import MNIST, Result, all_runs, dlrun_env, dlrun_in_process, selected, store_uri

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
    def __init__(self, folder: str, batch: int = 64, n_train: int = 1024):
        super().__init__()
        self.folder, self.batch, self.n_train = folder, batch, n_train

    def setup(self, stage=None):
        self.train = _read(self.folder, "train", self.n_train)
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
    data = f"_target_: reader.Digits\nfolder: {MNIST}\nbatch: 64\nn_train: 1024\n"
    (folder / "conf" / "data" / "digits.yaml").write_text(data)
    (folder / "conf" / "objective" / "reader.yaml").write_text("_target_: reader.Reader\nlr: 0.002\nwidth: 32\n")
    return folder


def command(args: list[str], store: str) -> list[str]:
    """The command line with the project's two groups and the store (Hydra's -m first)."""
    flags = [a for a in args if a == "-m"]
    rest = [a for a in args if a != "-m"]
    return [*flags, "data=digits", "objective=reader", f"tracking.uri={store}", "tracking.log_model=false", *rest]


def run(args: list[str], cwd: Path, store: str, env: dict[str, str] | None = None) -> Result:
    """The console script with the project's two groups (``env``: ``dlrun_env()`` taken now by default)."""
    import subprocess

    full = command(args, store)
    env = dlrun_env() if env is None else env
    proc = subprocess.run([str(DLRUN), *full], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return Result(full, cwd, proc.returncode, proc.stdout, proc.stderr)


SEARCH = [
    "-m",
    "hydra/sweeper=optuna",
    "hydra.sweeper.n_trials=2",
    "objective.lr=tag(log, interval(1e-4, 1e-2))",
    "checkpoint.monitor=val/acc",
    "checkpoint.mode=max",
    "trainer.max_epochs=1",
    *SHORT,
]


def search_then_rerun(project: Path, store: str, env: dict[str, str]) -> tuple[Result, Result | None, str]:
    """The search, then (if it finished) a run of the best.yaml it wrote, copied into the project's presets."""
    result = run(SEARCH, project, store, env)
    parents = [r for r in all_runs(store) if r.data.tags.get("dlrun.task") == "sweep"] if result.returncode == 0 else []
    if len(parents) != 1:
        return result, None, store
    [best_yaml] = Path(parents[0].data.tags["dlrun.output_dir"]).glob("best.yaml")
    (project / "experiments").mkdir(exist_ok=True)
    shutil.copy(best_yaml, project / "experiments" / "best_reader.yaml")
    return result, run(["experiment=best_reader"], project, store, env), store


KILLED = ["trainer.max_epochs=3", "data.n_train=16384", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def killed_then_resumed(project: Path, store: str, env: dict[str, str]) -> dict[str, Any]:
    """Three epochs, SIGKILLed once epoch 1's checkpoint is written, then resumed by run id."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        [str(DLRUN), *command(KILLED, store)], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    run_id, deadline = None, time.monotonic() + 240
    try:
        while run_id is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(Exception):  # the store may not exist yet
                [first] = all_runs(store)
                # epoch 1's checkpoint (written after its metrics): what resume continues from
                if (Path(first.data.tags["dlrun.output_dir"]) / "checkpoints" / "last.ckpt").exists():
                    run_id = first.info.run_id
    finally:
        proc.send_signal(signal.SIGKILL)
        killed = proc.wait(30)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    out: dict[str, Any] = {"run_id": run_id, "killed": killed, "status_after_kill": None, "store": store, "log": stderr}
    if run_id is None:
        return out
    out["status_after_kill"] = all_runs(store)[0].info.status
    out["resumed"] = run([*KILLED, f"resume={run_id}"], project, store, env)
    return out


@pytest.fixture(scope="module")
def started(
    project: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Future]]:
    """The module's commands that train or import torch, started at once and run two at a time; each test checks
    what its command left (a ``Result`` and the store it wrote)."""
    env = dlrun_env()  # taken here: in-process jobs of other modules must not reach these processes
    commands = {
        "no_monitor": ["trainer.max_epochs=2", "callbacks=[default,lr_monitor]", *SHORT],
        "never_logged": ["checkpoint.monitor=val/loss", "checkpoint.mode=min", *SHORT],
        "summary": ["task=summary"],
        "broken": ["+objective.broken=true"],
        "grid": ["-m", "objective.width=8,16", "checkpoint.monitor=val/acc", "checkpoint.mode=max", *SHORT],
    }
    stores = {name: store_uri(tmp_path_factory.mktemp(name)) for name in [*commands, "search"]}
    pool = ThreadPoolExecutor(max_workers=2)
    stores["killed"] = store_uri(tmp_path_factory.mktemp("killed"))
    futures = {"search": pool.submit(search_then_rerun, project, stores["search"], env)}
    if "test_killed_by_sigkill_resumes_into_the_same_run_with_each_epoch_once" in selected(request.session):
        futures["killed"] = pool.submit(killed_then_resumed, project, stores["killed"], env)
    for name, args in commands.items():
        futures[name] = pool.submit(lambda a, s: (run(a, project, s, env), s), args, stores[name])
    try:
        yield futures
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def test_without_a_monitor_the_last_epoch_is_kept_and_callbacks_come_from_config(started: dict[str, Future]) -> None:
    result, store = started["no_monitor"].result()
    assert result.returncode == 0, result.describe()
    notes = [line for line in result.stderr.splitlines() if "names no monitor" in line]
    assert len(notes) == 1 and "checkpoints keep the last epoch" in notes[0], result.stderr
    [finished] = [r for r in all_runs(store) if r.data.tags.get("dlrun.task") == "train"]  # eval/predict add theirs
    assert finished.info.status == "FINISHED"
    assert finished.info.run_name == "digits-reader"  # the parts used: no model group was built
    assert not {"model", "optimizer", "scheduler"} & {k.split(".")[0] for k in finished.data.params}
    assert "dlrun.monitor" not in finished.data.tags
    assert 0.0 <= finished.data.metrics["test/acc"] <= 1.0
    assert "lr-Adam" in finished.data.metrics  # LearningRateMonitor, from conf/callbacks/lr_monitor.yaml
    import torch

    [last] = (Path(finished.data.tags["dlrun.output_dir"]) / "checkpoints").glob("*.ckpt")
    assert last.name == "last.ckpt" and torch.load(last, weights_only=True)["global_step"] == 8  # 2 epochs x 4


def test_a_monitor_the_module_never_logs_stops_before_the_first_epoch(started: dict[str, Future]) -> None:
    result, store = started["never_logged"].result()
    assert result.returncode == 2, result.describe()
    assert (
        result.error
        == "checkpoint.monitor: Reader never logs 'val/loss'; it logs val/acc (set checkpoint.monitor to one of them)"
    )
    [failed] = all_runs(store)
    assert failed.info.status == "FAILED" and failed.data.tags["dlrun.error"].endswith(result.error)
    assert "train/loss" not in failed.data.metrics and "epoch" not in failed.data.metrics  # no step was taken


def test_summary_without_an_example_input_shows_layers_and_parameters(started: dict[str, Future]) -> None:
    result, _ = started["summary"].result()
    assert result.returncode == 0, result.describe()
    assert (
        "body.1" in result.stdout and "25,120" in result.stdout and "body.3" in result.stdout and "330" in result.stdout
    )
    assert "25,450 parameters" in result.stdout.replace("\n", " ")


def test_an_optuna_search_over_the_objective_group_reports_and_reruns(
    started: dict[str, Future], project: Path
) -> None:
    result, again, store = started["search"].result()
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
    assert (project / "experiments" / "best_reader.yaml").read_text() == best_yaml.read_text()  # what was rerun
    assert again is not None and again.returncode == 0, again.describe() if again else "not rerun"
    rerun = next(r for r in all_runs(store) if r.info.run_name == "best_reader")
    assert float(rerun.data.params["objective.lr"]) == pytest.approx(preset["objective"]["lr"])


def test_a_search_without_a_known_mode_stops_before_any_run(project: Path, tmp_path: Path) -> None:
    store = store_uri(tmp_path)
    result = run(["-m", "hydra/sweeper=optuna", "objective.lr=interval(1e-4, 1e-2)", *SHORT], project, store)
    assert result.returncode == 2, result.describe()
    assert result.error.startswith("hydra.sweeper.direction: the objective names no mode")
    assert all_runs(store) == []


def in_process(args: list[str], cwd: Path, folder: Path) -> tuple[Result, str]:
    """``run``'s command line, run in this process, with its own store in ``folder``."""
    folder.mkdir()
    store = store_uri(folder)
    full = ["data=digits", "objective=reader", f"tracking.uri={store}", "tracking.log_model=false", *args]
    return dlrun_in_process(full, cwd), store


def test_user_code_errors_name_cause_file_and_line_before_any_run(
    started: dict[str, Future], project: Path, tmp_path: Path
) -> None:
    broken, store = started["broken"].result()
    assert broken.returncode == 2, broken.describe()
    assert (
        broken.error
        == f"objective: Reader() raised RuntimeError: cannot set up the reader at {project / 'reader.py'}:44"
    )
    assert all_runs(store) == []
    # The two import failures in this process (``dlrun_in_process``); the command's one line is shown above.
    (project / "typo.py").write_text("import torch\nclass Net:\n    def f(self)\n        pass\n")
    (project / "needs.py").write_text("import not_a_package_xyz\nclass Net: ...\n")
    syntax, store = in_process(["objective._target_=typo.Net"], project, tmp_path / "syntax")
    assert (
        syntax.returncode == 2
        and syntax.error
        == f"objective._target_: cannot import 'typo.Net': SyntaxError at {project / 'typo.py'}:3: expected ':'"
    )
    assert all_runs(store) == []
    missing, store = in_process(["objective._target_=needs.Net"], project, tmp_path / "missing")
    cause = f"'not_a_package_xyz' is not installed (imported at {project / 'needs.py'}:1)"
    assert missing.returncode == 2 and missing.error == f"objective._target_: cannot import 'needs.Net': {cause}"
    assert all_runs(store) == []  # every one stopped before a run opened


@pytest.mark.slow  # two processes of several epochs (~25 s); the starter and built-in resumes are tested too
def test_killed_by_sigkill_resumes_into_the_same_run_with_each_epoch_once(started: dict[str, Future]) -> None:
    out = started["killed"].result()
    assert out["run_id"] is not None and out["killed"] == -9, out
    assert out["status_after_kill"] == "RUNNING"  # kill -9: nothing could mark it
    resumed = out["resumed"]
    assert resumed.returncode == 0, resumed.describe()
    assert f"resuming of run {out['run_id']}" in resumed.stderr + resumed.stdout
    runs = all_runs(out["store"])
    assert [r.info.run_id for r in runs if r.data.tags.get("dlrun.task", "train") == "train"] == [out["run_id"]]
    assert next(r for r in runs if r.info.run_id == out["run_id"]).info.status == "FINISHED"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(out["store"])
    steps = [m.step for m in client.get_metric_history(out["run_id"], "val/acc")]
    assert len(steps) == 3 and steps == sorted(set(steps)), steps  # one value per epoch, none repeated
    assert max(m.value for m in client.get_metric_history(out["run_id"], "epoch")) == 3


def test_eval_and_predict_by_run_id_agree_with_the_recorded_test_metric(
    started: dict[str, Future], project: Path
) -> None:
    """The no-monitor run's last checkpoint, evaluated and used for predictions by run id (in this process)."""
    result, store = started["no_monitor"].result()
    assert result.returncode == 0, result.describe()
    [trained] = [r for r in all_runs(store) if r.data.tags.get("dlrun.task") == "train"]
    run_id, recorded = trained.info.run_id, trained.data.metrics["test/acc"]
    common = [f"ckpt={run_id}", f"tracking.uri={store}", "tracking.log_model=false", "trainer.limit_test_batches=1"]
    evaluated = dlrun_in_process(["data=digits", "objective=reader", "task=eval", *common], project)
    assert evaluated.returncode == 0, evaluated.describe()
    [line] = [x for x in evaluated.stdout.splitlines() if x.startswith(f"test of run {run_id}:")]
    assert float(line.split("test/acc ", 1)[1].split()[0]) == pytest.approx(recorded, abs=1e-6)
    assert "names no monitor" not in evaluated.stderr  # training's note, not evaluation's
    predicted = dlrun_in_process(["data=digits", "objective=reader", "task=predict", *common], project)
    assert predicted.returncode == 0, predicted.describe()
    [rows] = [line for line in predicted.stdout.splitlines() if line.startswith("wrote ")]
    lines = Path(rows.split(" to ", 1)[1]).read_text().splitlines()
    assert lines[0] == "index,label,probability" and len(lines) == 257  # the 256 test images the module reads
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as handle:
        truth = handle.read()[8 : 8 + 256]
    labels = [int(line.split(",")[1]) for line in lines[1:]]
    probabilities = [float(line.split(",")[2]) for line in lines[1:]]
    assert all(0.1 <= p <= 1.0 for p in probabilities)  # a softmax maximum over 10 classes
    assert sum(a == b for a, b in zip(labels, truth, strict=True)) / 256 == pytest.approx(recorded, abs=1e-6)


def test_a_grid_sweep_records_one_parent_and_its_children(started: dict[str, Future]) -> None:
    result, store = started["grid"].result()
    assert result.returncode == 0, result.describe()
    runs = all_runs(store)
    [parent] = [r for r in runs if r.data.tags.get("dlrun.task") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert sorted(int(c.data.params["objective.width"]) for c in children) == [8, 16]
    assert all(c.info.status == "FINISHED" and "test/acc" in c.data.metrics for c in children)
    assert "val/acc (max)" in result.stdout  # the table's label names the metric and its direction
