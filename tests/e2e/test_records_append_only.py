"""A failing command never changes a finished record (issue 21): a resume or a continued search that fails
before its first step leaves every run in the store exactly as it was; search settings are checked before
the sweep's parent run opens. Real stores, real ``dlrun`` processes, tiny MNIST trainings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import DATA, all_runs, dlrun, dlrun_in_process, early, store_uri

TINY = [
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "tracking.log_model=false",
    "callbacks.plots=false",
    "model.hidden_sizes=[32]",
]
SEARCH = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", "optimizer.lr=tag(log, interval(1e-4, 1e-2))"]


def snapshot(uri: str) -> str:
    """Every run's status, end time, params, tags and metric histories, as text to compare."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = {
        r.info.run_id: {
            "status": r.info.status,
            "end_time": r.info.end_time,
            "params": r.data.params,
            "tags": r.data.tags,
            "metrics": {
                k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics
            },
        }
        for r in all_runs(uri)
    }
    return json.dumps(runs, sort_keys=True, indent=1)


def test_a_resume_that_fails_before_its_first_step_leaves_the_finished_run_as_it_was(tmp_path: Path) -> None:
    store = store_uri(tmp_path)
    # The finished run to resume is made in this process; the resume that fails is the command (its exit too).
    first = dlrun_in_process(
        [*TINY, "trainer.max_epochs=1", f"tracking.uri={store}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path
    )
    assert first.returncode == 0, first.describe()
    before = snapshot(store)
    assert json.loads(before)[all_runs(store)[0].info.run_id]["status"] == "FINISHED"
    (tmp_path / "empty").mkdir()
    args = [
        *TINY,
        f"resume={tmp_path / 'run'}",
        "trainer.max_epochs=3",
        f"paths.data_dir={tmp_path / 'empty'}",
        "data.download=false",
        f"tracking.uri={store}",
    ]
    failed = dlrun(args, tmp_path)
    assert failed.returncode == 1 and failed.error.startswith(f"{tmp_path / 'empty'}/mnist: missing "), (
        failed.describe()
    )
    assert snapshot(store) == before  # status, end time, tags, params and metric histories untouched


def test_a_search_that_cannot_start_leaves_the_finished_search_as_it_was(early_result: Callable) -> None:
    early_result(search_then_five_refusals)  # its checks run with it, from the session's start (helpers.early)


@early
def search_then_five_refusals(tmp_path: Path) -> None:
    """A search, then five commands continuing it that must stop before the parent run opens: six processes
    one after the other (checked as they go), so an early job."""
    store = store_uri(tmp_path)
    common = [*TINY, "trainer.max_epochs=1", f"tracking.uri={store}", f"paths.data_dir={DATA}"]
    first = dlrun([*SEARCH, *common], tmp_path)
    assert first.returncode == 0, first.describe()
    assert "Creating initial MLflow database tables" not in first.stderr and "A new study created" not in first.stderr
    before = snapshot(store)
    cases = {
        "hydra.sweeper.pruner=bogus": "hydra.sweeper.pruner: unknown pruner 'bogus'; choose one of ",
        "hydra.sweeper.n_trials=0": "hydra.sweeper.n_trials: must be >= 1",
        "hydra.sweeper.direction=sideways": "hydra.sweeper.direction: 'sideways'",
        "optimizer.lr=tag(log, interval(0, 1e-2))": "optimizer.lr: a log interval must start above 0",
        "hydra.sweeper.storage=bogus://x": "hydra.sweeper.storage: cannot open bogus://x (NoSuchModuleError",
    }
    for override, line in cases.items():
        result = dlrun([*SEARCH, *common, override], tmp_path)
        assert result.returncode == 2, result.describe()
        assert len(result.stderr.strip().splitlines()) == 1 and result.error.startswith(line), result.describe()
        assert snapshot(store) == before, f"{override} changed the store"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--sort", "val/nothing"], "--sort val/nothing: no run shown has this metric; they have: "),
        (["--top", "2"], "--top 2: needs --sort METRIC and N >= 1"),
    ],
)
def test_runs_flags_are_checked_naming_the_flag(tmp_path: Path, args: list[str], line: str, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from dlrun.browse.commands import runs_main

    client = MlflowClient(store_uri(tmp_path))
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(experiment, run_name="r")
    client.log_metric(run.info.run_id, "val/acc", 0.5)
    client.set_terminated(run.info.run_id, "FINISHED")
    assert runs_main(["--tracking-uri", store_uri(tmp_path), *args]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"dlrun: error: {line}")


def test_runs_top_takes_the_best_after_sorting(tmp_path: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from dlrun.browse.commands import runs_main

    client = MlflowClient(store_uri(tmp_path))
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    for name, value in (("best", 0.9), ("worst", 0.1), ("middle", 0.5), ("none", None)):
        run = client.create_run(experiment, run_name=name)
        if value is not None:
            client.log_metric(run.info.run_id, "val/acc", value)
        client.set_terminated(run.info.run_id, "FINISHED")
    # --last 1 would keep only the newest ("none"); --top 2 ranks all runs first.
    assert runs_main(["--tracking-uri", store_uri(tmp_path), "--sort", "val/acc", "--top", "2", "--json"]) == 0
    shown = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert shown == ["best", "middle"]


def test_a_store_that_is_no_mlflow_store_is_named(tmp_path: Path, capsys) -> None:
    import sqlite3

    from dlrun.browse.commands import runs_main

    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 50)
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    assert runs_main(["--tracking-uri", store_uri(tmp_path, "junk.db")]) == 1
    assert f"{tmp_path / 'junk.db'} is not an SQLite database" in capsys.readouterr().err
    assert runs_main(["--tracking-uri", store_uri(tmp_path, "other.db")]) == 1
    assert "is an SQLite file but not an MLflow store" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--port", "70000"], "dlrun ui: argument --port: 70000 is not a port (0 to 65535)"),
        (["--host", "999.1.1.1"], "--host 999.1.1.1: not a host name or address"),
    ],
)
def test_ui_flags_are_checked_naming_the_flag(tmp_path: Path, args: list[str], line: str, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from dlrun.browse.ui import ui_main

    MlflowClient(store_uri(tmp_path)).create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    code = ui_main(["--tracking-uri", store_uri(tmp_path), *args])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (code, last.startswith(f"dlrun: error: {line}")) == (2 if "--port" in args else 1, True), last


def test_init_adds_to_an_existing_project_and_keeps_its_files(tmp_path: Path, capsys) -> None:
    from dlrun.starter import init_main

    project = tmp_path / "mine"
    project.mkdir()
    (project / "README.md").write_text("my own\n")
    assert init_main([str(project)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert init_main([str(project), "--add"]) == 0
    out = capsys.readouterr().out
    assert (project / "README.md").read_text() == "my own\n" and "kept 1 files" in out
    assert (project / "experiments" / "spirals.yaml").is_file() and (project / "tinynet.py").is_file()
    assert init_main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dlrun: error: dlrun init: the following arguments are required: directory (see dlrun init --help)"]
