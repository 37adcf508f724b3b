"""A user's own project, outside the repository, run with the installed ``dlrun`` console script (not ``python -m``).

Two projects: the starter that ``dlrun init`` writes (own network + own data module on the contract), and a
plain Lightning pair (``examples/plain_lightning``) that imports nothing from dlrun.

The long commands (training each project, the sweeps, the user model on MNIST, the run with no monitor) are
independent: the ``started`` fixture runs them all from the first test on, two at a time, and each test checks
what its commands left. The quick ones (``--cfg job``, ``--help``) run in the test itself. Evaluating and
summarizing a trained project run in this process (``dlrun_in_process``, which makes the project importable
as the command does); the console script's own part, importing the project's code, is shown by the training.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import REPO, Result, all_runs, dlrun_env, dlrun_in_process, selected, store_uri

DLRUN = Path(sys.executable).with_name("dlrun")  # the console script installed beside this Python


def console_env() -> dict[str, str]:
    """The command's environment: no PYTHONPATH of ours, the project must import itself."""
    env = dlrun_env({"OMP_NUM_THREADS": "1"})
    env.pop("PYTHONPATH", None)
    return env


def console(args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> Result:
    """Run the installed ``dlrun`` console script in ``cwd`` (``env``: ``console_env()`` taken now by default)."""
    env = console_env() if env is None else env
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


@dataclass
class Trained:
    """What training a project's preset with the console script left."""

    root: Path
    preset: str
    uri: str
    trained: Result
    runs: list  # the store's runs right after training


def train_command(root: Path, preset: str, env: dict[str, str]) -> Trained:
    """Train the preset with the console script (checked below, with eval and summary)."""
    uri = store_uri(root)
    trained = console([f"experiment={preset}", *SHORT[preset], f"tracking.uri={uri}"], root, env=env)
    return Trained(root, preset, uri, trained, all_runs(uri))


def check_train_eval_summary(done: Trained, layer: str) -> str:
    """The run the console script trained; then, in this process, its evaluation by run id and the summary
    (``dlrun_in_process``: the console script's part, importing the project's own code, is the training's);
    return the run id."""
    root, preset, uri = done.root, done.preset, done.uri
    finished(done.trained)
    runs = done.runs
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

    evaluated = dlrun_in_process(["task=eval", f"ckpt={run.info.run_id}", f"tracking.uri={uri}"], root)
    finished(evaluated)
    eval_run = next(r for r in all_runs(uri) if r.data.tags.get("dlrun.source_run_id") == run.info.run_id)
    assert eval_run.data.metrics["test/acc"] == run.data.metrics["test/acc"]
    assert eval_run.data.metrics["test/loss"] == pytest.approx(run.data.metrics["test/loss"], rel=1e-6)

    predicted = dlrun_in_process(["task=predict", f"ckpt={run.info.run_id}", f"tracking.uri={uri}"], root)
    finished(predicted)
    [wrote] = [line for line in predicted.stdout.splitlines() if line.startswith("wrote ")]
    rows = Path(wrote.split(" to ", 1)[1]).read_text().splitlines()[1:]
    assert rows and all(0.0 < float(r.split(",")[2]) <= 1.0 for r in rows)
    if preset == "spirals":  # its test split is data/test.csv: the predictions' accuracy is the recorded test/acc
        truth = [line.rsplit(",", 1)[1] for line in (root / "data" / "test.csv").read_text().splitlines()[1:]]
        labels = [r.split(",")[1] for r in rows]
        assert sum(a == b for a, b in zip(labels, truth, strict=True)) / len(truth) == pytest.approx(
            run.data.metrics["test/acc"], abs=1e-6
        )

    summary = dlrun_in_process([f"experiment={preset}", "task=summary", "tracking.enabled=false"], root)
    finished(summary)
    assert layer in summary.stdout, summary.describe()
    return run.info.run_id


def sweep_command(root: Path, preset: str, override: str, env: dict[str, str]) -> tuple[Result, str]:
    """A 2-job joblib sweep over one of the project's hyperparameters."""
    uri = store_uri(root, "sweep.db")
    result = console(["-m", f"experiment={preset}", "trainer.max_epochs=1", override, "hydra/launcher=joblib",
                      "hydra.launcher.n_jobs=2", f"tracking.uri={uri}"], root, env=env)  # fmt: skip
    return result, uri


def check_sweep(result: Result, uri: str) -> None:
    """One parent, two FINISHED children."""
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


def no_monitor_command(plain: Path, env: dict[str, str]) -> Result:
    return console(["experiment=rings", "checkpoint.monitor=null", "checkpoint.mode=null", "trainer.max_epochs=1",
                    "trainer.limit_train_batches=2", "tracking.enabled=false"], plain, env=env)  # fmt: skip


def user_model_command(starter: Path, env: dict[str, str]) -> tuple[Result, str]:
    uri = store_uri(starter, "tiny.db")
    result = console(["model=tiny", "model.hidden=32", "trainer.max_epochs=1", "trainer.limit_train_batches=60",
                      "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", f"tracking.uri={uri}"], starter,
                     env=env)  # fmt: skip
    return result, uri


@pytest.fixture(scope="module")
def started(starter: Path, plain: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Future]]:
    """The module's long commands, all independent, started at once and run two at a time (see the docstring);
    a command whose test is not selected (``-m 'not slow'``) is not started."""
    env = console_env()
    pool = ThreadPoolExecutor(max_workers=2)
    commands = {
        "starter": (train_command, starter, "spirals", env),
        "plain": (train_command, plain, "rings", env),
        "starter_sweep": (sweep_command, starter, "spirals", "model.hidden=8,16", env),
        "plain_sweep": (sweep_command, plain, "rings", "objective.hidden=8,16", env),
        "no_monitor": (no_monitor_command, plain, env),
        "user_model": (user_model_command, starter, env),
    }
    names = selected(request.session)
    skipped = {
        "starter_sweep": "test_starter_project_sweeps_its_own_hyperparameter",
        "plain_sweep": "test_plain_lightning_pair_sweeps",
    }
    futures = {
        name: pool.submit(*command)
        for name, command in commands.items()
        if name not in skipped or skipped[name] in names
    }
    try:
        yield futures
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def wait_for_all(started: dict[str, Future]) -> None:
    """Until every long command is done (their failures are their own tests' business)."""
    for future in started.values():
        future.exception()


def test_starter_project_trains_evaluates_and_summarizes(started: dict[str, Future]) -> None:
    check_train_eval_summary(started["starter"].result(), "TinyNet")


@pytest.mark.slow  # the plain pair's sweep below (and test_sweeps.py) keep sweeps in the default suite
def test_starter_project_sweeps_its_own_hyperparameter(started: dict[str, Future]) -> None:
    check_sweep(*started["starter_sweep"].result())


@pytest.mark.slow
def test_starter_project_under_ddp(starter: Path) -> None:
    ddp_two_processes(starter, "spirals")


def test_plain_lightning_pair_trains_evaluates_and_summarizes(started: dict[str, Future]) -> None:
    run_id = check_train_eval_summary(started["plain"].result(), "RingsClassifier")
    assert run_id


@pytest.mark.slow  # test_plain_lightning_matrix.py sweeps a plain pair (grid and Optuna) in the default suite
def test_plain_lightning_pair_sweeps(started: dict[str, Future]) -> None:
    check_sweep(*started["plain_sweep"].result())


@pytest.mark.slow
def test_plain_lightning_pair_under_ddp(plain: Path) -> None:
    ddp_two_processes(plain, "rings")


def test_plain_module_without_monitor_keeps_the_last_epoch_said_once(started: dict[str, Future]) -> None:
    result = started["no_monitor"].result()
    finished(result)
    notes = [line for line in result.stderr.splitlines() if "names no monitor" in line]
    # docs/extending.md: no monitor, Lightning's behaviour (no val/loss guess since issue 20).
    assert len(notes) == 1 and "checkpoints keep the last epoch" in notes[0], result.describe()


def test_user_model_alone_trains_on_mnist(started: dict[str, Future]) -> None:
    result, uri = started["user_model"].result()
    finished(result)
    (run,) = all_runs(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["objective._target_"] == "dlrun.objectives.classification.ClassificationModule"
    assert run.data.params["model._target_"] == "tinynet.TinyNet"
    assert run.data.metrics["test/acc"] > 0.6  # 60 steps of a 784-32-32-10 net, far above chance (0.1)


def test_user_config_replaces_the_shipped_option_and_is_marked_in_help(
    starter: Path, started: dict[str, Future]
) -> None:
    wait_for_all(started)  # this test changes the project's files
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


def test_user_preset_can_pull_in_a_shipped_preset(starter: Path, started: dict[str, Future]) -> None:
    wait_for_all(started)  # this test changes the project's files
    (starter / "experiments" / "my_mlp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - mnist_mlp\n  - _self_\n\nmodel:\n  hidden_sizes: [33]\n"
    )
    job = console(["experiment=my_mlp", "--cfg", "job"], starter)
    finished(job)
    assert "- 33" in job.stdout and "max_epochs: 20" in job.stdout  # ours on top of the shipped preset's


def test_missing_contract_member_is_one_line_naming_class_and_member(starter: Path, started: dict[str, Future]) -> None:
    wait_for_all(started)  # this test changes the project's files
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
