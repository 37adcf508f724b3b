"""A user's own project, outside the repository, run with the installed ``dlrun`` console script (not ``python -m``).

Two projects: the starter that ``dlrun init`` writes (own network + own data module on the contract), and a
plain Lightning pair (``examples/plain_lightning``) that imports nothing from dlrun.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, Result, all_runs, dlrun_env, store_uri

DLRUN = Path(sys.executable).with_name("dlrun")  # the console script installed beside this Python


def console(args: list[str], cwd: Path, timeout: float = 300) -> Result:
    """Run the installed ``dlrun`` console script in ``cwd`` (no PYTHONPATH of ours: the project must import itself)."""
    env = dlrun_env({"OMP_NUM_THREADS": "1"})
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(DLRUN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Result(list(args), cwd, proc.returncode, proc.stdout, proc.stderr)


def finished(result: Result) -> None:
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()


@pytest.fixture(scope="module")
def starter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dlrun init`` into a fresh folder outside the repository."""
    root = tmp_path_factory.mktemp("user") / "project"
    result = console(["init", str(root)], cwd=root.parent)
    finished(result)
    assert {"tinynet.py", "points.py", "conf/model/tiny.yaml", "experiments/spirals.yaml", "data/train.csv"} <= {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
    }
    assert not str(root).startswith(str(REPO))
    return root


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``examples/plain_lightning`` copied outside the repository."""
    root = tmp_path_factory.mktemp("plain") / "project"
    shutil.copytree(REPO / "examples" / "plain_lightning", root)
    return root


SHORT = {"spirals": ["trainer.max_epochs=3"], "rings": ["trainer.max_epochs=3"]}


def train_eval_summary(root: Path, preset: str, layer: str) -> str:
    """Train the preset, check the run, evaluate it by run id, summarize it; return the run id."""
    uri = store_uri(root)
    trained = console([f"experiment={preset}", *SHORT[preset], f"tracking.uri={uri}"], root)
    finished(trained)
    runs = all_runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert 0.5 < run.data.metrics["test/acc"] <= 1.0
    assert "val/acc" in run.data.metrics and "train/loss" in run.data.metrics
    if preset == "spirals":  # the contract's data_files(): one dataset input per split, for the MLflow UI
        inputs = {
            tuple(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
            for d in run.inputs.dataset_inputs
        }
        assert set(inputs) == {("train",), ("val",), ("test",)} and {d.name for d in inputs.values()} == {"points"}
    checkpoints = list((root / "outputs").rglob("checkpoints/epoch*.ckpt"))
    assert checkpoints, "no best checkpoint written"
    saved = torch.load(checkpoints[0], map_location="cpu", weights_only=True)
    assert saved["dlrun"]["config"]["data"]["_target_"].split(".")[0] in ("points", "lit")

    evaluated = console(["task=eval", f"ckpt={run.info.run_id}", f"tracking.uri={uri}"], root)
    finished(evaluated)
    eval_run = next(r for r in all_runs(uri) if r.data.tags.get("dlrun.source_run_id") == run.info.run_id)
    assert eval_run.data.metrics["test/acc"] == run.data.metrics["test/acc"]
    assert eval_run.data.metrics["test/loss"] == pytest.approx(run.data.metrics["test/loss"], rel=1e-6)

    summary = console([f"experiment={preset}", "task=summary", "tracking.enabled=false"], root)
    finished(summary)
    assert layer in summary.stdout, summary.describe()
    return run.info.run_id


def sweep_two_jobs(root: Path, preset: str, override: str) -> None:
    """A 2-job joblib sweep over one of the project's hyperparameters: one parent, two FINISHED children."""
    uri = store_uri(root, "sweep.db")
    result = console(["-m", f"experiment={preset}", "trainer.max_epochs=1", override, "hydra/launcher=joblib",
                      "hydra.launcher.n_jobs=2", f"tracking.uri={uri}"], root)  # fmt: skip
    finished(result)
    runs = all_runs(uri)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = {r.data.tags["mlflow.parentRunId"] for r in children}
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children), [r.info.status for r in runs]
    assert len(parents) == 1 and parents <= {r.info.run_id for r in runs}


def ddp_two_processes(root: Path, preset: str) -> None:
    """``trainer=ddp_cpu trainer.devices=2`` records exactly one FINISHED run."""
    uri = store_uri(root, "ddp.db")
    result = console([f"experiment={preset}", "trainer=ddp_cpu", "trainer.devices=2", "trainer.max_epochs=1",
                      f"tracking.uri={uri}"], root, timeout=400)  # fmt: skip
    finished(result)
    runs = all_runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "test/acc" in runs[0].data.metrics


def test_starter_project_trains_evaluates_and_summarizes(starter: Path) -> None:
    train_eval_summary(starter, "spirals", "TinyNet")


def test_starter_project_sweeps_its_own_hyperparameter(starter: Path) -> None:
    sweep_two_jobs(starter, "spirals", "model.hidden=8,16")


@pytest.mark.slow
def test_starter_project_under_ddp(starter: Path) -> None:
    ddp_two_processes(starter, "spirals")


def test_plain_lightning_pair_trains_evaluates_and_summarizes(plain: Path) -> None:
    run_id = train_eval_summary(plain, "rings", "RingsClassifier")
    assert run_id


def test_plain_lightning_pair_sweeps(plain: Path) -> None:
    sweep_two_jobs(plain, "rings", "objective.hidden=8,16")


@pytest.mark.slow
def test_plain_lightning_pair_under_ddp(plain: Path) -> None:
    ddp_two_processes(plain, "rings")


def test_plain_module_without_monitor_follows_val_loss_said_once(plain: Path) -> None:
    result = console(["experiment=rings", "checkpoint.monitor=null", "checkpoint.mode=null", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=2", "tracking.enabled=false"], plain)  # fmt: skip
    finished(result)
    notes = [line for line in result.stderr.splitlines() if "names no monitor" in line]
    assert len(notes) == 1 and "val/loss (min)" in notes[0], result.describe()


def test_user_model_alone_trains_on_mnist(starter: Path) -> None:
    uri = store_uri(starter, "tiny.db")
    result = console(["model=tiny", "model.hidden=32", "trainer.max_epochs=1", "trainer.limit_train_batches=60",
                      "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", f"tracking.uri={uri}"], starter)  # fmt: skip
    finished(result)
    (run,) = all_runs(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["objective._target_"] == "dlrun.objectives.classification.ClassificationModule"
    assert run.data.params["model._target_"] == "tinynet.TinyNet"
    assert run.data.metrics["test/acc"] > 0.6  # 60 steps of a 784-32-32-10 net, far above chance (0.1)


def test_user_config_replaces_the_shipped_option_and_is_marked_in_help(starter: Path) -> None:
    (starter / "conf" / "model" / "mlp.yaml").write_text("_target_: tinynet.TinyNet\nhidden: 7\n")
    try:
        job = console(["--cfg", "job"], starter)
        finished(job)
        assert "_target_: tinynet.TinyNet" in job.stdout and "hidden: 7" in job.stdout
        shown = console(["--help"], starter)
        finished(shown)
        model_line = next(line for line in shown.stdout.splitlines() if line.startswith("model: "))
        assert "mlp*" in model_line and "tiny*" in model_line and "cnn," in model_line
        assert "experiment: " in shown.stdout and "spirals*" in shown.stdout
    finally:
        (starter / "conf" / "model" / "mlp.yaml").unlink()


def test_user_preset_can_pull_in_a_shipped_preset(starter: Path) -> None:
    (starter / "experiments" / "my_mlp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - mnist_mlp\n  - _self_\n\nmodel:\n  hidden_sizes: [33]\n"
    )
    job = console(["experiment=my_mlp", "--cfg", "job"], starter)
    finished(job)
    assert "- 33" in job.stdout and "max_epochs: 20" in job.stdout  # ours on top of the shipped preset's


def test_missing_contract_member_is_one_line_naming_class_and_member(starter: Path) -> None:
    (starter / "broken.py").write_text(
        "from dlrun.contracts import DataModule\n\n"
        "class NoDims(DataModule):\n"
        "    def __init__(self, seed: int = 0) -> None:\n        super().__init__()\n"
    )
    (starter / "conf" / "data" / "broken.yaml").write_text("_target_: broken.NoDims\n")
    result = console(["data=broken", "tracking.uri=" + store_uri(starter, "broken.db")], starter)
    assert result.returncode == 2, result.describe()
    assert result.error == "data: broken.NoDims does not implement dims (dlrun.contracts.DataModule)"
    assert "Traceback" not in result.stderr
    assert all_runs(store_uri(starter, "broken.db")) == []  # found from the class, before any run opened
