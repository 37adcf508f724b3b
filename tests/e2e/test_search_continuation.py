"""A continued search never proposes a parameter set it has already run (issue 22, point 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import DATA, Result, dlrun, early, store_uri

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "tracking.log_model=false",
    "callbacks.plots=false",
    f"paths.data_dir={DATA}",
]


@early
def search_then_continue(folder: Path) -> list[Result]:
    """The search, then the same command with a larger budget, which continues the study (an early job)."""
    common = ["hparams_search=mnist_optuna", f"tracking.uri={store_uri(folder)}", *TINY]
    return [dlrun([*common, f"hydra.sweeper.n_trials={n_trials}"], folder) for n_trials in (2, 4)]


def test_a_continued_search_draws_new_parameter_sets(early_result: Callable) -> None:
    import optuna

    results = early_result(search_then_continue)
    for result in results:
        assert result.returncode == 0, result.describe()
    tmp_path = results[0].cwd
    study = optuna.load_study(study_name="mnist_mlp", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(drawn) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len(set(drawn)) == 4, f"a continued search replayed earlier draws: {drawn}"
