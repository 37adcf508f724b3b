"""Cross-validation pieces without training: stratified seeded folds, the command line as a fold sweep, a
trial's outcome from its folds, and the parent's fold-wise metrics."""

from __future__ import annotations

import pytest
import torch

from dlrun.config.cross_validation import expand_folds, fold_sweep
from dlrun.data.folds import class_ids, fold_ids, make_fold
from dlrun.errors import ConfigError
from dlrun.sweeping.fold_trials import fold_jobs, fold_outcome, per_trial
from dlrun.sweeping.seed_stats import cross_validated_best, fill_stats, parent_metrics, seed_groups
from dlrun.sweeping.table import JobRow

# Uneven classes: 50, 31 and 7 examples, interleaved.
LABELS = torch.tensor([0] * 50 + [1] * 31 + [2] * 7)[torch.randperm(88, generator=torch.Generator().manual_seed(1))]


def test_folds_are_stratified_disjoint_covering_and_seeded() -> None:
    ids = fold_ids(LABELS, 4, seed=0)
    sizes = torch.bincount(ids, minlength=4).tolist()
    assert sum(sizes) == 88 and max(sizes) - min(sizes) <= 1
    for label, total in ((0, 50), (1, 31), (2, 7)):
        per_fold = torch.bincount(ids[LABELS == label], minlength=4).tolist()
        assert sum(per_fold) == total and max(per_fold) - min(per_fold) <= 1, (label, per_fold)
    assert torch.equal(ids, fold_ids(LABELS, 4, seed=0))
    assert not torch.equal(ids, fold_ids(LABELS, 4, seed=1))
    folds = [make_fold(LABELS, 4, i, seed=0) for i in range(4)]
    assert sorted(torch.cat([f.val for f in folds]).tolist()) == list(range(88))
    for fold in folds:
        assert sorted(torch.cat([fold.train, fold.val]).tolist()) == list(range(88))
        assert fold.record(LABELS)["val_digest"] == fold.val_digest()
    assert len({f.val_digest() for f in folds}) == 4


def test_labels_of_any_kind_and_bad_folds() -> None:
    assert class_ids(["cat", "dog", "cat", 3]).tolist() == [0, 1, 0, 2]
    with pytest.raises(ConfigError, match=r"cv\.fold: must be in 0\.\.2, got 3"):
        make_fold(LABELS, 3, 3, seed=0)
    with pytest.raises(ConfigError, match=r"cv\.folds: 5 folds of a training set of 4 examples"):
        make_fold([0, 1, 0, 1], 5, 0, seed=0)


def test_the_command_line_becomes_a_sweep_over_the_folds() -> None:
    assert fold_sweep(["model=mlp", "cv.folds=3", "seed=1"], 3) == [
        "--multirun",
        "model=mlp",
        "cv.folds=3",
        "cv.fold=0,1,2",
        "seed=1",
    ]
    assert fold_sweep(["-m", "cv.folds=2", "model=mlp,cnn"], 2) == ["-m", "cv.folds=2", "cv.fold=0,1", "model=mlp,cnn"]
    assert fold_sweep(["cv.folds=3", "cv.fold=2"], 3) == ["--multirun", "cv.folds=3", "cv.fold=2"]
    assert expand_folds(["cv.folds=null", "model=mlp"]) == ["cv.folds=null", "model=mlp"]
    assert expand_folds(["--cfg", "job", "cv.folds=3"]) == ["--cfg", "job", "cv.folds=3"]  # shown, not run


def test_a_trial_is_its_folds() -> None:
    from optuna.trial import TrialState

    assert fold_jobs([["a=1"], ["a=2"]], 2) == [
        ["a=1", "cv.fold=0"],
        ["a=1", "cv.fold=1"],
        ["a=2", "cv.fold=0"],
        ["a=2", "cv.fold=1"],
    ]
    assert per_trial([1, 2, 3, 4, 5, 6], 3) == [[1, 2, 3], [4, 5, 6]]
    done = (TrialState.COMPLETE, 0.5, None)
    assert fold_outcome([done, (TrialState.COMPLETE, 0.7, None)]) == (TrialState.COMPLETE, pytest.approx(0.6), None)
    assert fold_outcome([done, (TrialState.PRUNED, None, None)]) == (TrialState.PRUNED, None, None)
    failed = (TrialState.FAIL, None, "boom")
    assert fold_outcome([(TrialState.PRUNED, None, None), failed]) == failed


def test_the_parent_gets_each_fold_and_the_best_mean() -> None:
    rows = [
        JobRow(i, [f"model={m}", f"cv.fold={f}"], "FINISHED", v)
        for i, (m, f, v) in enumerate([("mlp", 0, 0.9), ("mlp", 1, 0.7), ("cnn", 0, 0.85), ("cnn", 1, 0.85)])
    ]
    groups = seed_groups(rows, [])
    fill_stats(groups, "val/acc", lambda row: {})
    best = cross_validated_best(groups, "val/acc", "max")
    assert best is not None and best.label == "model=cnn"  # 0.85 mean beats mlp's 0.8, though mlp had the best fold
    metrics = parent_metrics(groups, "val/acc", "max")
    assert metrics["val/acc_fold0"] == 0.85 and metrics["model-mlp/val/acc_fold0"] == 0.9
    assert metrics["val/acc_mean"] == pytest.approx(0.85) and metrics["model-mlp/val/acc_mean"] == pytest.approx(0.8)
    seeds_only = seed_groups([JobRow(0, ["seed=1"], "FINISHED", 1.0), JobRow(1, ["seed=2"], "FINISHED", 0.5)], [])
    fill_stats(seeds_only, "val/acc", lambda row: {})
    assert cross_validated_best(seeds_only, "val/acc", "max") is None
    assert not any("_fold" in name for name in parent_metrics(seeds_only, "val/acc", "max"))
