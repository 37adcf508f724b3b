"""Real ``dlrun.run`` jobs through ``helpers.dlrun_in_process`` leave this process as they found it.

The in-process cases of other files (bad inputs, config errors, text faults, user projects) rely on it: a
job must not pass its working directory, ``PYTHONPATH``, torch threads, signal handlers, logging levels,
random state or user modules on to the next test.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
import torch

from helpers import all_runs, dlrun_in_process, process_state, state_changes, store_uri

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "model.hidden_sizes=[16]",
    "tracking.log_model=false",
    "callbacks.plots=false",
]


def assert_same_state(before: dict, after: dict) -> None:
    changed = state_changes(before, after)
    assert not changed, changed


@pytest.fixture(autouse=True)
def heavy_imports_done() -> None:
    """Lightning and MLflow imported (and their loggers made) before the first snapshot, as after any job."""
    import mlflow  # noqa: F401
    import pytorch_lightning  # noqa: F401


def test_a_training_run_leaves_threads_paths_and_environment_as_they_were(tmp_path: Path) -> None:
    import dlrun

    other = 1 if torch.get_num_threads() != 1 else 2
    during: dict = {}

    def train(args: list[str]) -> None:
        dlrun.run(args)
        during.update(process_state())

    random.seed(12345)  # not the job's seed, whatever earlier tests left
    before = process_state()
    args = [*TINY, f"resources.threads={other}", f"tracking.uri={store_uri(tmp_path)}"]
    result = dlrun_in_process(args, tmp_path, runner=train)
    assert result.returncode == 0, result.describe()
    assert_same_state(before, process_state())
    # The job did change them (dlrun's documented behaviour), so the comparison above is not idle.
    assert during["torch threads"] == other != before["torch threads"]
    assert during["sys.path"][0] == str(tmp_path.resolve()) and during["environ"]["PYTHONPATH"].startswith(
        str(tmp_path.resolve())
    )
    assert during["random"] != before["random"]  # the job seeded the random generators
    (run,) = all_runs(store_uri(tmp_path))
    assert run.info.status == "FINISHED" and run.data.params["resources.threads_used"] == str(other)


@pytest.mark.parametrize(
    ("case", "code"),
    [("config_error", 2), ("failed_run", 1), ("user_code", 1)],
)
def test_failing_jobs_leave_the_process_as_it_was(tmp_path: Path, case: str, code: int) -> None:
    uri = store_uri(tmp_path)
    args = {
        "config_error": ["optimizer.lr=abc", f"tracking.uri={uri}"],
        "failed_run": [*TINY, f"paths.data_dir={tmp_path / 'empty'}", "data.download=false", f"tracking.uri={uri}"],
        "user_code": ["model=mine", f"tracking.uri={uri}"],
    }[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text("_target_: mine.Net\n")
    (tmp_path / "mine.py").write_text("class Net:\n    def __init__(self, **kw):\n        raise RuntimeError('no')\n")
    before = process_state()
    result = dlrun_in_process(args, tmp_path)
    assert result.returncode == code, result.describe()
    assert_same_state(before, process_state())
    assert "mine" not in sys.modules and os.getcwd() == before["cwd"]
    runs = all_runs(uri) if (tmp_path / "m.db").exists() else []
    assert [r.info.status for r in runs] == ([] if case == "config_error" else ["FAILED"])
