"""``dlrun`` trains the MLP on real MNIST in a subprocess; the MLflow store holds exactly what the contract lists.

Also: the same seed gives the same numbers (a process and an in-process run), and a diverging run (a process)
fails with one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

import dlrun
from helpers import DATA, Result, all_runs, dlrun_in_process, early, store_uri
from helpers import dlrun as run_dlrun

OVERRIDES = [
    "model=mlp",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=100",
    "trainer.limit_val_batches=2",
]


class Trained:
    def __init__(self, result: Result, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.result = result
        self.cwd = result.cwd
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.runs = all_runs(uri)
        self.run = self.runs[0] if self.runs else None


SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=20", "trainer.limit_val_batches=2"]
RUNS = {
    "train": OVERRIDES,
    "first": [*SHORT, "trainer.log_every_n_steps=5"],
    "diverges": [
        *SHORT,
        "optimizer=sgd",
        "optimizer.lr=1e10",
        "optimizer.momentum=0.99",
        "trainer.log_every_n_steps=1",
    ],
    "second": [*SHORT, "trainer.log_every_n_steps=5"],  # first's seed and settings, in this process
}


@early
def processes(folder: Path) -> dict[str, Result]:
    """The training and two short runs, ``dlrun`` processes one after the other, from the session's start."""
    out = {}
    for name in ("train", "first", "diverges"):
        (folder / name).mkdir()
        out[name] = run_dlrun([*RUNS[name], f"tracking.uri={store_uri(folder / name)}"], folder / name)
    return out


@pytest.fixture(scope="module")
def jobs(
    tmp_path_factory: pytest.TempPathFactory, data_root: Path, early_result: Callable
) -> dict[str, tuple[Result, str]]:
    """Every run of the module with its store: the processes (an early job) and ``second``, run here in this
    process: the same seed must give the same numbers in a fresh process and in one that has run other jobs
    before (and has another hash seed)."""
    cwd = tmp_path_factory.mktemp("second")
    results = {"second": dlrun_in_process([*RUNS["second"], f"tracking.uri={store_uri(cwd)}"], cwd)}
    results.update(early_result(processes))
    return {name: (result, store_uri(result.cwd)) for name, result in results.items()}


@pytest.fixture(scope="module")
def trained(jobs: dict[str, tuple[Result, str]]) -> Trained:
    result, uri = jobs["train"]
    assert result.returncode == 0, result.describe()
    return Trained(result, uri)


@pytest.fixture(scope="module")
def checkpoint(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> dict:
    files = [a.path for a in trained.client.list_artifacts(trained.run.info.run_id, "checkpoints")]
    assert len(files) == 1 and files[0].endswith(".ckpt"), files
    local = trained.client.download_artifacts(trained.run.info.run_id, files[0], str(tmp_path_factory.mktemp("ckpt")))
    return torch.load(local, map_location="cpu", weights_only=True)


def test_process_output(trained: Trained) -> None:
    result = trained.result
    assert "dlrun: error" not in result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("epoch 1/1 ")
    assert "val/acc" in epoch_lines[0]


def test_one_finished_run_with_readable_name(trained: Trained) -> None:
    assert len(trained.runs) == 1
    run = trained.run
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mnist-mlp"
    assert trained.client.get_experiment(run.info.experiment_id).name == "mnist"


def test_params_are_the_flattened_config(trained: Trained) -> None:
    params = trained.run.data.params
    assert params["optimizer.lr"] == "0.001"
    assert params["model.hidden_sizes"] == "[512, 512]"
    assert params["data.batch_size"] == "128"
    assert params["trainer.max_epochs"] == "1"
    assert params["trainer.limit_train_batches"] == "100"
    assert params["model._target_"] == "dlrun.models.mlp.MLP"
    assert params["paths.data_dir"] == str(DATA)


def test_metrics(trained: Trained) -> None:
    metrics = trained.run.data.metrics
    assert {"train/loss", "val/loss", "val/acc", "test/loss", "test/acc", "train/samples_per_s"} <= set(metrics)
    # Measured: test/acc 0.926, test/loss 0.237 after 100 batches of 128; chance is 0.1 and ln(10) = 2.30.
    assert metrics["test/acc"] >= 0.90
    assert metrics["val/acc"] >= 0.88
    assert metrics["test/loss"] < 0.4 and metrics["val/loss"] < 0.4
    assert 0 < metrics["train/samples_per_s"] < 1e6

    history = trained.client.get_metric_history(trained.run.info.run_id, "train/loss")
    steps = [m.step for m in history]
    assert len(history) >= 2 and steps == sorted(set(steps))
    assert all(math.isfinite(m.value) and 0 < m.value < 2.31 for m in history)


def test_tags(trained: Trained) -> None:
    tags = trained.run.data.tags
    assert tags["dlrun.version"] == dlrun.__version__
    assert tags["dlrun.overrides"].split() == [*OVERRIDES, f"tracking.uri={trained.uri}"]
    output_dir = Path(tags["dlrun.output_dir"])
    assert output_dir.is_dir() and output_dir.is_relative_to(trained.cwd / "outputs")
    assert (output_dir / "checkpoints").is_dir()
    assert "dlrun.git_commit" not in tags  # the working directory is not in git
    assert "dlrun.error" not in tags


def test_artifacts(trained: Trained) -> None:
    client, run_id = trained.client, trained.run.info.run_id
    assert {"config.yaml", "overrides.yaml", "model_summary.txt", "checkpoints"} <= {
        a.path for a in client.list_artifacts(run_id)
    }
    config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml")).read_text())
    assert config["model"]["hidden_sizes"] == [512, 512]
    assert config["trainer"]["max_epochs"] == 1
    assert config["tracking"]["uri"] == trained.uri
    overrides = yaml.safe_load(Path(client.download_artifacts(run_id, "overrides.yaml")).read_text())
    assert overrides == [*OVERRIDES, f"tracking.uri={trained.uri}"]
    summary = Path(client.download_artifacts(run_id, "model_summary.txt")).read_text()
    assert "Linear" in summary and "[128, 784]" in summary and "[128, 10]" in summary
    assert "669 K" in summary
    # Artifacts live beside the store: <tmp>/mlartifacts/<experiment>/<run id>/artifacts.
    stored = trained.cwd / "mlartifacts" / "mnist" / run_id / "artifacts"
    assert (stored / "config.yaml").is_file() and list((stored / "checkpoints").glob("*.ckpt"))


def test_checkpoint_is_plain_data_with_config(checkpoint: dict) -> None:
    from dlrun.models.mlp import MLP

    expected = {f"net.{k}" for k in MLP([1, 28, 28], 10).state_dict()}
    assert set(checkpoint["state_dict"]) == expected
    assert checkpoint["dlrun"]["config"]["model"]["hidden_sizes"] == [512, 512]
    assert checkpoint["dlrun"]["config"]["optimizer"]["lr"] == 0.001


def test_checkpoint_reproduces_test_accuracy(checkpoint: dict, trained: Trained, official: dict) -> None:
    """The logged checkpoint is the one that was tested: reloaded into a bare MLP, it gets the same test/acc."""
    from dlrun.data.mnist import normalize
    from dlrun.models.mlp import MLP

    net = MLP([1, 28, 28], 10)
    net.load_state_dict({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()})
    net.eval()
    with torch.no_grad():
        predicted = net(normalize(official["test_images"])).argmax(dim=1)
    accuracy = (predicted == official["test_labels"].long()).float().mean().item()
    assert accuracy == pytest.approx(trained.run.data.metrics["test/acc"], abs=1e-4)


# ---------------------------------------------------------------- reproducibility and a diverging run


def test_same_seed_same_results(jobs: dict[str, tuple[Result, str]]) -> None:
    from mlflow.tracking import MlflowClient

    outcomes = []
    for name in ("first", "second"):
        result, uri = jobs[name]
        assert result.returncode == 0, result.describe()
        (run,) = all_runs(uri)
        assert run.info.status == "FINISHED"
        history = MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "train/loss")
        losses = [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]
        outcomes.append((run.data.metrics, losses))
    (first, first_losses), (second, second_losses) = outcomes
    assert first["test/acc"] > 0.6  # it trained (chance is 0.1)
    assert first["test/acc"] == second["test/acc"]
    assert first["val/loss"] == second["val/loss"]
    assert first["test/loss"] == second["test/loss"]
    assert len(first_losses) == 4 and first_losses == second_losses


def test_diverging_run_fails_with_one_line(jobs: dict[str, tuple[Result, str]]) -> None:
    from mlflow.tracking import MlflowClient

    result, uri = jobs["diverges"]
    assert result.returncode == 1, result.describe()
    assert "Traceback" not in result.stderr
    assert "NaN or infinite" in result.error
    assert result.error.startswith("train/loss became NaN or infinite")
    assert not [line for line in result.stdout.splitlines() if line.startswith("epoch ")]

    (run,) = all_runs(uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["dlrun.error"] == f"TrainingError: {result.error}"
    assert "test/acc" not in run.data.metrics
    # The loss really left the finite numbers (logged every step here).
    losses = [m.value for m in MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "train/loss")]
    assert losses and not all(math.isfinite(v) for v in losses)
