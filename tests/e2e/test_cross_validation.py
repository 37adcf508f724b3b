"""k-fold cross-validation on real MNIST: ``dlrun cv.folds=3`` is one sweep (a parent, a child per fold), the
folds' validation sets are disjoint, stratified and cover the 60k training images (from each child's
``cv_fold.json``), and the parent's fold-wise values and mean ± std are the children's. Bad ``cv`` inputs stop
with one line before any run opens."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from dlrun.cli import describe_error
from dlrun.config.cross_validation import expand_folds
from helpers import TRAIN_COUNTS, all_runs, dlrun, dlrun_in_process, store_uri

LIMITS = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=500",
    "model.hidden_sizes=[32]",
    "tracking.log_model=false",
    "callbacks.plots=false",
]
PARENT = "mlflow.parentRunId"
FOLDS = 3


def fold_record(uri: str, run_id: str, folder: Path) -> dict:
    """A child's ``cv_fold.json`` artifact."""
    from mlflow.tracking import MlflowClient

    path = MlflowClient(uri).download_artifacts(run_id, "cv_fold.json", str(folder / run_id))
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_three_folds_are_one_parent_with_three_children_and_its_mean_and_std(tmp_path: Path) -> None:
    uri = store_uri(tmp_path)
    result = dlrun([f"cv.folds={FOLDS}", *LIMITS, f"tracking.uri={uri}"], tmp_path)
    assert result.returncode == 0, result.describe()
    runs = all_runs(uri)
    parents = [r for r in runs if PARENT not in r.data.tags]
    children = sorted((r for r in runs if PARENT in r.data.tags), key=lambda r: int(r.data.params["cv.fold"]))
    assert len(parents) == 1 and len(children) == FOLDS, result.describe()
    parent = parents[0]
    assert {c.data.tags[PARENT] for c in children} == {parent.info.run_id}
    assert [c.data.params["cv.fold"] for c in children] == ["0", "1", "2"]
    assert all(c.info.status == "FINISHED" and c.data.params["cv.folds"] == "3" for c in children)

    # Validation folds: disjoint, together exactly the 60k training images (the 10k test images never in them),
    # each class split within one image of a third; the record's digest and count are the run's tags.
    records = [fold_record(uri, c.info.run_id, tmp_path / "artifacts") for c in children]
    folds = [set(r["val_indices"]) for r in records]
    assert sum(len(f) for f in folds) == len(set().union(*folds)) == 60000
    assert set().union(*folds) == set(range(60000))
    for child, record in zip(children, records, strict=True):
        assert record["pool_size"] == 60000 and record["val_count"] == len(record["val_indices"]) == 20000
        assert child.data.tags["dlrun.cv.val_digest"] == record["val_digest"]
        assert child.data.tags["dlrun.cv.val_count"] == "20000"
        counts = zip(record["val_label_counts"], TRAIN_COUNTS, strict=True)
        assert all(abs(n - total / FOLDS) <= 1 for n, total in counts)
    assert [sum(r["val_label_counts"][d] for r in records) for d in range(10)] == TRAIN_COUNTS

    # The parent: each fold's value, the mean and the sample std of the children's values; its optimized
    # metric is the mean over the folds.
    metrics = parent.data.metrics
    for name in ("val/acc", "test/acc", "test/loss"):
        values = [c.data.metrics[name] for c in children]
        assert [metrics[f"{name}_fold{i}"] for i in range(FOLDS)] == pytest.approx(values, abs=1e-9)
        assert metrics[f"{name}_mean"] == pytest.approx(statistics.fmean(values), abs=1e-9)
        assert metrics[f"{name}_std"] == pytest.approx(statistics.stdev(values), abs=1e-9)
        assert metrics[f"{name}_n"] == FOLDS
    assert metrics["val/acc"] == pytest.approx(metrics["val/acc_mean"], abs=1e-9)
    assert len({c.data.metrics["val/acc"] for c in children} | {c.data.metrics["test/acc"] for c in children}) > 1
    assert "over folds: mean ± std" in result.stdout

    # A fold's model evaluated again on split=val sees its own fold: the same val/acc as in its run.
    child = children[1]
    again = dlrun_in_process(["task=eval", f"ckpt={child.info.run_id}", "split=val", f"tracking.uri={uri}"], tmp_path)
    assert again.returncode == 0, again.describe()
    (evaluated,) = [r for r in all_runs(uri) if r.data.tags.get("dlrun.task") == "eval"]
    assert evaluated.data.metrics["val/acc"] == child.data.metrics["val/acc"]


@pytest.mark.parametrize(
    ("argument", "line"),
    [
        ("cv.folds=1", "cv.folds: 1 fold cannot cross-validate; use 2 or more"),
        ("cv.folds=0", "cv.folds: 0 folds cannot cross-validate; use 2 or more"),
        ("cv.folds=two", "cv.folds: expected one whole number of folds >= 2, got 'two'"),
    ],
)
def test_bad_fold_counts_stop_in_one_line_before_any_run(argument: str, line: str) -> None:
    with pytest.raises(Exception) as raised:
        expand_folds([argument, "trainer.max_epochs=1"])
    assert describe_error(raised.value, [argument]) == (2, line)


def test_a_data_module_without_a_training_set_stops_the_command_before_any_run(tmp_path: Path) -> None:
    uri = store_uri(tmp_path)
    result = dlrun(["data=multi30k", "cv.folds=3", f"tracking.uri={uri}"], tmp_path)
    assert result.returncode == 2, result.describe()
    assert result.error.startswith(
        "cv.folds: dlrun.data.text_module.TextDataModule exposes no training set to split into folds "
        "(it lacks training_labels and use_fold;"
    ), result.error
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "multirun").exists()


def test_a_fold_job_checks_its_cv_keys_before_its_run_opens(tmp_path: Path) -> None:
    uri = store_uri(tmp_path)
    cases = {
        "cv.fold=3": "cv.fold: expected a fold in 0..2, got 3",
        "cv.fold=null": "cv.folds=3: runs one job per fold; give it on the command line (dlrun cv.folds=3 ...) "
        "or sweep cv.fold=0,...,2 yourself",
    }
    for override, line in cases.items():
        result = dlrun_in_process(["cv.folds=3", override, *LIMITS, f"tracking.uri={uri}"], tmp_path)
        assert (result.returncode, result.error) == (2, line), result.describe()
    assert all_runs(uri) == []


@pytest.mark.slow
def test_an_optuna_trial_is_its_folds_and_its_value_their_mean(tmp_path: Path) -> None:
    import optuna

    uri = store_uri(tmp_path)
    args = ["hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", "cv.folds=2", *LIMITS, f"tracking.uri={uri}"]
    result = dlrun(args, tmp_path)
    assert result.returncode == 0, result.describe()
    runs = all_runs(uri)
    children = [r for r in runs if PARENT in r.data.tags]
    assert len(runs) - len(children) == 1 and len(children) == 4, result.describe()
    study = optuna.load_study(study_name="mnist_mlp", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        folds = sorted(
            (int(r.data.params["cv.fold"]), r) for r in children if r.data.tags["dlrun.trial"] == str(trial.number)
        )
        assert [fold for fold, _ in folds] == [0, 1]
        # Both folds trained the trial's parameters; the trial's value is the mean of their val/acc.
        assert all(r.data.params["optimizer.lr"] == str(trial.params["optimizer.lr"]) for _, r in folds)
        values = [r.data.metrics["val/acc"] for _, r in folds]
        assert trial.user_attrs["fold_values"] == pytest.approx(values, abs=1e-9)
        assert trial.value == pytest.approx(statistics.fmean(values), abs=1e-9)
    (best,) = tmp_path.glob("multirun/*/*/best.yaml")
    assert "cv." not in best.read_text(encoding="utf-8")  # the chosen configuration reruns on the usual split


@pytest.mark.slow
def test_a_grid_runs_every_configuration_on_every_fold_and_picks_the_best_mean(tmp_path: Path) -> None:
    uri = store_uri(tmp_path)
    grid = ["-m", "optimizer.lr=1e-3,1e-2", "cv.folds=2"]
    result = dlrun([*grid, *LIMITS, f"tracking.uri={uri}"], tmp_path)
    assert result.returncode == 0, result.describe()
    runs = all_runs(uri)
    (parent,) = [r for r in runs if PARENT not in r.data.tags]
    children = [r for r in runs if PARENT in r.data.tags]
    assert sorted((c.data.params["optimizer.lr"], c.data.params["cv.fold"]) for c in children) == [
        ("0.001", "0"),
        ("0.001", "1"),
        ("0.01", "0"),
        ("0.01", "1"),
    ]
    means = {}
    for lr in ("0.001", "0.01"):
        values = [c.data.metrics["val/acc"] for c in children if c.data.params["optimizer.lr"] == lr]
        means[lr] = statistics.fmean(values)
        assert parent.data.metrics[f"optimizer.lr-{lr}/val/acc_mean"] == pytest.approx(means[lr], abs=1e-9)
    best = max(means, key=means.get)
    assert parent.data.metrics["val/acc"] == pytest.approx(means[best], abs=1e-9)  # the best mean, not the best fold
    assert parent.data.tags["dlrun.best_overrides"] == f"optimizer.lr={best}"
    assert parent.data.metrics["val/acc"] < max(c.data.metrics["val/acc"] for c in children)
