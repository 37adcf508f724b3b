"""dlrun's Optuna sweeper (hydra/sweeper=optuna): a persistent study that a rerun continues, trials pruned per
epoch, parallel trials into one study, the parent run's report, thread budgets, and seeds as a sweep axis.

Real SQLite studies and MLflow stores, real ``dlrun`` processes, tiny MNIST MLP trainings.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from helpers import REPO, Result, Started, all_runs, dlrun, early, store_uri

PARENT = "mlflow.parentRunId"
# A user's own callback (tests/user_callbacks/kill_trial.py) kills one trial of a search mid-way.
USER_CODE = str(REPO / "tests" / "user_callbacks")
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [USER_CODE, os.environ.get("PYTHONPATH")]))}


def kill_trial(number: int) -> list[str]:
    """Overrides that add the killing callback, armed for trial ``number`` only."""
    return [
        "+callbacks.kill._target_=kill_trial.KillDuringTrial",
        f"+callbacks.kill.at_trial={number}",
        "+callbacks.kill.trial=${oc.select:trial.number,null}",
    ]


TINY = [
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=500",
    "data.batch_size=64",
    "model.hidden_sizes=[64]",
    "tracking.log_model=false",
    "callbacks.plots=false",
]


def search(tmp_path: Path, *args: str, env: dict | None = None, name: str = "s") -> list[str]:
    """A search over two good learning rates and one far too large, maximizing val/acc, into ``tmp_path``."""
    return [
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.direction=maximize",
        f"hydra.sweeper.study_name={name}",
        "optimized_metric=val/acc",
        *TINY,
        f"tracking.uri={store_uri(tmp_path)}",
        *args,
    ]


def study(tmp_path: Path, name: str = "s"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def states(tmp_path: Path, name: str = "s") -> list[str]:
    return [t.state.name for t in sorted(study(tmp_path, name).trials, key=lambda t: t.number)]


def split(uri: str) -> tuple[list, list]:
    runs = all_runs(uri)
    return [r for r in runs if PARENT not in r.data.tags], [r for r in runs if PARENT in r.data.tags]


def epochs(uri: str, run) -> int:
    """Training epochs a run went through: its val/acc history (one value per validation)."""
    from mlflow.tracking import MlflowClient

    return len(MlflowClient(uri).get_metric_history(run.info.run_id, "val/acc"))


def check_one_child_per_trial(tmp_path: Path, name: str = "s") -> tuple:
    """Every trial of the study has exactly one MLflow run, under one parent; states agree on both sides."""
    uri = store_uri(tmp_path)
    parents, children = split(uri)
    assert len(parents) == 1, [p.info.run_name for p in parents]
    trials = sorted(study(tmp_path, name).trials, key=lambda t: t.number)
    by_trial = {}
    for child in children:
        assert child.data.tags[PARENT] == parents[0].info.run_id
        number = int(child.data.tags["dlrun.trial"])
        assert number not in by_trial, f"trial {number} has two runs"
        by_trial[number] = child
    assert sorted(by_trial) == [t.number for t in trials]
    expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for trial in trials:
        run = by_trial[trial.number]
        assert run.info.status == expected[trial.state.name], (trial.number, trial.state.name, run.info.status)
        if trial.state.name == "PRUNED":
            assert int(run.data.tags["dlrun.pruned"]) == epochs(uri, run)
    return parents[0], by_trial, trials


# ---- lean: a killed search resumed by the same command, with a trial pruned on the way


@early
def killed_search_rerun(folder: Path) -> tuple:
    """The search killed during trial 1, the study's trial states then, and the same command again: processes one
    after the other, so an early job (helpers.early)."""
    # The grid sampler (seed 3) starts with a good lr; trial 1 is killed in the first run; the rerun runs two more,
    # among them lr 40, pruned after its first epoch (worse than the finished trial there), the others train two.
    args = search(
        folder,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.n_trials=3",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "optimizer.lr=choice(0.003,0.002,40.0)",
        "trainer.max_epochs=2",
        # The killed search's lease on trial 1 runs out 2 s after its last heartbeat: long before the rerun looks.
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=2",
    )
    first = dlrun([*args, *kill_trial(1)], folder, env=ENV)
    after_first = states(folder) if (folder / "optuna.db").exists() else None
    return first, after_first, dlrun(args, folder, env=ENV)


def seed_sweep(folder: Path) -> Result:
    uri = store_uri(folder)
    args = ["-m", "seed=1,2", *TINY, "trainer.limit_train_batches=2", "trainer.max_epochs=1", f"tracking.uri={uri}"]
    return dlrun(args, folder)


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """The seed sweep, started with the module's first test (the other search is an early job)."""
    seeds = tmp_path_factory.mktemp("seeds")
    started = Started({"seeds": lambda: seed_sweep(seeds)})
    try:
        yield started
    finally:
        started.close()


def test_a_killed_search_resumes_with_the_same_command_and_prunes_a_bad_trial(early_result: Callable) -> None:
    first, after_first, second = early_result(killed_search_rerun)
    tmp_path = first.cwd
    assert first.returncode == -9, first.describe()  # SIGKILLed during trial 1
    assert after_first == ["COMPLETE", "RUNNING"]

    assert second.returncode == 0, second.describe()
    assert "1 of 3 trials finished, 1 left running by a stopped search marked FAIL; running 2" in second.stdout
    found = states(tmp_path)
    assert found[:2] == ["COMPLETE", "FAIL"] and sorted(found[2:]) == ["COMPLETE", "PRUNED"], found
    parent, runs, trials = check_one_child_per_trial(tmp_path)
    assert "stopped during this trial" in runs[1].data.tags["dlrun.error"]
    assert "stopped during this trial" in second.stdout  # the table's error column, from the run
    pruned = next(t.number for t in trials if t.state.name == "PRUNED")
    complete = [t.number for t in trials if t.state.name == "COMPLETE"]
    assert trials[pruned].params["optimizer.lr"] == 40.0 and trials[0].params["optimizer.lr"] != 40.0
    assert epochs(store_uri(tmp_path), runs[pruned]) == 1
    assert [epochs(store_uri(tmp_path), runs[n]) for n in complete] == [2, 2]
    assert all(trials[n].user_attrs["mlflow_run_id"] == runs[n].info.run_id for n in complete)
    # The table of the second run shows the whole study; the parent was continued, not replaced.
    assert "study s: 4 trials: 2 COMPLETE, 1 PRUNED, 1 FAIL" in second.stdout
    assert "PRUNED after epoch 1" in second.stdout and "(continued)" in second.stdout
    assert parent.info.status == "FINISHED" and parent.data.tags["dlrun.study"].startswith("s@sqlite:///")
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert parent.data.tags["dlrun.best_trial"] == str(best.number)
    assert parent.data.tags["dlrun.best_run_id"] == runs[best.number].info.run_id
    assert parent.data.metrics["val/acc"] == pytest.approx(best.value)
    assert parent.data.metrics["trials/pruned"] == 1.0


# ---- the done-when checks of issue 12, at full size


@pytest.mark.slow
def test_sigkill_during_trial_3_of_6_then_rerun_ends_with_6_finished_trials(tmp_path: Path) -> None:
    args = search(
        tmp_path,
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.pruner=median",
        "optimizer.lr=tag(log,interval(1e-4,1.0))",
        "trainer.max_epochs=3",
    )
    first = dlrun([*args, *kill_trial(2)], tmp_path, env=ENV)  # trial 3 of 6 (numbers from 0)
    assert first.returncode == -9, first.describe()
    assert states(tmp_path)[-1] == "RUNNING" and len(states(tmp_path)) == 3
    second = dlrun(args, tmp_path, env=ENV)
    assert second.returncode == 0, second.describe()
    finished = [s for s in states(tmp_path) if s in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6 and states(tmp_path).count("FAIL") == 1 and states(tmp_path)[2] == "FAIL"
    _, runs, _ = check_one_child_per_trial(tmp_path)
    assert runs[2].info.status == "FAILED"
    # The same command once more has nothing left to do.
    third = dlrun(args, tmp_path, env=ENV)
    assert third.returncode == 0 and "6 of 6 trials finished; running 0" in third.stdout, third.describe()
    assert len(states(tmp_path)) == 7


@pytest.mark.slow
def test_median_pruning_trains_fewer_epochs_than_the_same_search_without(tmp_path: Path) -> None:
    # Half the learning rates are far too large (the MLP diverges to chance): obvious bad trials.
    common = [
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=6",
        "optimizer.lr=choice(0.003,0.002,0.001,30.0,40.0,50.0)",
        "trainer.max_epochs=4",
    ]
    totals = {}
    for pruner in ("none", "median"):
        folder = tmp_path / pruner
        folder.mkdir()
        extra = ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1"] if pruner == "median" else []
        result = dlrun(search(folder, *common, *extra), folder, env=ENV)
        assert result.returncode == 0, result.describe()
        _, runs, trials = check_one_child_per_trial(folder)
        per_trial = {
            t.number: (t.params["optimizer.lr"], t.state.name, epochs(store_uri(folder), runs[t.number]))
            for t in trials
        }
        totals[pruner] = sum(e for *_, e in per_trial.values())
        print(f"pruner={pruner}: {totals[pruner]} training epochs in all; per trial (lr, state, epochs): {per_trial}")
        if pruner == "median":
            pruned = [e for _, s, e in per_trial.values() if s == "PRUNED"]
            complete = [e for _, s, e in per_trial.values() if s == "COMPLETE"]
            assert pruned and max(pruned) < min(complete) == 4
    print(f"total training epochs: {totals['none']} without pruning, {totals['median']} with the median pruner")
    assert totals["median"] < totals["none"] == 24


@pytest.mark.slow
def test_joblib_runs_two_trials_at_a_time_into_one_study(tmp_path: Path) -> None:
    args = search(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "optimizer.lr=tag(log,interval(1e-4,1e-2))",
        "trainer.max_epochs=1",
    )
    result = dlrun(args, tmp_path, env=ENV)
    assert result.returncode == 0, result.describe()
    assert "running 4, 2 at a time" in result.stdout
    assert states(tmp_path) == ["COMPLETE"] * 4
    _, runs, _ = check_one_child_per_trial(tmp_path)
    # Trials 0 and 1 ran at the same time, in two processes; then 2 and 3.
    for a, b in ((0, 1), (2, 3)):
        ra, rb = runs[a].info, runs[b].info
        assert ra.start_time < rb.end_time and rb.start_time < ra.end_time, (a, b)
    # Two jobs at once on this machine: each got its share of the cores.
    from dlrun.sweeping.threads import available_cores

    assert {r.data.params["resources.threads_used"] for r in runs.values()} == {str(max(1, available_cores() // 2))}


@pytest.mark.slow
def test_the_mnist_optuna_preset_works_unchanged_and_resumes(tmp_path: Path) -> None:
    base = [
        "hparams_search=mnist_optuna",
        *TINY[:-4],
        "trainer.max_epochs=1",
        "tracking.log_model=false",
        "callbacks.plots=false",
        f"tracking.uri={store_uri(tmp_path)}",
    ]
    first = dlrun([*base, "hydra.sweeper.n_trials=2"], tmp_path, env=ENV)
    assert first.returncode == 0, first.describe()
    second = dlrun([*base, "hydra.sweeper.n_trials=3"], tmp_path, env=ENV)
    assert second.returncode == 0, second.describe()
    assert "2 of 3 trials finished; running 1" in second.stdout
    assert states(tmp_path, "mnist_mlp") == ["COMPLETE"] * 3
    parent, runs, trials = check_one_child_per_trial(tmp_path, "mnist_mlp")
    # The distribution trials draw from: the preset's tag(log, interval(1e-4, 1e-2)), as Optuna writes it.
    assert parent.data.params["search.optimizer.lr"] == "FloatDistribution(high=0.01, log=True, low=0.0001, step=None)"
    # What the parent learned: best trial, plots, and a best.yaml that reruns it.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri(tmp_path))
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots/optuna")}
    assert {"optimization_history.png", "parallel_coordinate.png"} <= plots
    best = yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, "best.yaml", str(tmp_path))).read_text())
    winner = trials[int(parent.data.tags["dlrun.best_trial"])]
    assert best["optimizer"]["lr"] == pytest.approx(winner.params["optimizer.lr"])
    assert best["data"]["batch_size"] == winner.params["data.batch_size"]


# ---- seeds as a sweep axis (issue 16, item 1)


def test_a_seed_sweep_reports_mean_std_and_n_on_the_table_and_the_parent(started: Started) -> None:
    result = started["seeds"]
    uri = store_uri(result.cwd)
    assert result.returncode == 0, result.describe()
    parents, children = split(uri)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0].data.metrics
    for name in ("val/acc", "test/acc", "test/loss"):
        values = [c.data.metrics[name] for c in children]
        assert len(set(values)) > 1, f"the seeds gave the same {name}: the test would prove nothing"
        assert parent[f"{name}_mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert parent[f"{name}_std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert parent[f"{name}_n"] == 2
    mean, std = (
        statistics.fmean(c.data.metrics["test/acc"] for c in children),
        statistics.stdev(c.data.metrics["test/acc"] for c in children),
    )
    assert f"{mean:.4f} ± {std:.4f} (n=2)" in result.stdout
    assert "1 2" in result.stdout  # the seeds of the configuration


# ---- pieces, without a process


def test_search_space_syntax_of_hydra_optuna_sweeper() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from dlrun.errors import ConfigError
    from dlrun.sweeping.space import search_space

    space = search_space(
        {"optimizer.lr": "tag(log, interval(1e-4, 1e-2))", "data.batch_size": "choice(64, 128)"},
        [
            "model.hidden_sizes=choice([256],[512,512])",
            "x=range(1,10,2)",
            "y=interval(0,5)",
            "trainer.max_epochs=3",
            "data.batch_size=choice(32,64)",
        ],
    )
    d = space.distributions
    assert d["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["data.batch_size"] == CategoricalDistribution([32, 64])  # the command line wins over the preset
    assert d["model.hidden_sizes"] == CategoricalDistribution(["[256]", "[512,512]"])
    assert d["x"] == IntDistribution(1, 9, step=2)  # Hydra's range excludes its stop
    assert d["y"] == FloatDistribution(0.0, 5.0)  # Hydra reads interval bounds as floats (as the old plugin did)
    assert space.fixed == {"trainer.max_epochs": "trainer.max_epochs=3"}
    discrete = search_space(None, ["x=range(1,10,2)", "z=choice(a,b)"])
    assert discrete.grid() == {"x": [1, 3, 5, 7, 9], "z": ["a", "b"]}
    with pytest.raises(ConfigError, match="grid sampler needs choice"):
        space.grid()


def test_storage_defaults_beside_the_mlflow_store_and_names() -> None:
    from dlrun.errors import ConfigError
    from dlrun.sweeping.study import storage_url, study_name

    cwd = Path("/work/dir")
    assert storage_url(None, "sqlite:////data/runs/mlflow.db", cwd) == "sqlite:////data/runs/optuna.db"
    assert storage_url(None, "http://host:5000", cwd) == "sqlite:////work/dir/optuna.db"
    assert storage_url("journal://studies/s.log", None, cwd) == "journal:///work/dir/studies/s.log"
    assert storage_url("sqlite:///o.db", None, cwd) == "sqlite:////work/dir/o.db"
    assert storage_url("postgresql://u@h/db", None, cwd) == "postgresql://u@h/db"
    with pytest.raises(ConfigError, match="hydra.sweeper.storage"):
        storage_url("optuna.db", None, cwd)
    assert study_name(None, {"hparams_search": "mnist_optuna", "experiment": "x"}) == "mnist_optuna"
    assert study_name("mine", {"hparams_search": "mnist_optuna"}) == "mine"


def test_pruners_by_name_or_with_settings() -> None:
    import optuna

    from dlrun.errors import ConfigError
    from dlrun.sweeping.pruners import build_pruner, pruner_spec

    assert isinstance(build_pruner(pruner_spec("median")), optuna.pruners.MedianPruner)
    assert isinstance(build_pruner(pruner_spec(None)), optuna.pruners.NopPruner)
    hb = build_pruner(pruner_spec({"name": "hyperband", "min_resource": 1, "max_resource": 4, "reduction_factor": 2}))
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    assert isinstance(build_pruner(pruner_spec("successive_halving")), optuna.pruners.SuccessiveHalvingPruner)
    with pytest.raises(ConfigError, match="unknown pruner 'mean'"):
        pruner_spec("mean")


def test_a_journal_file_study_is_shared_by_two_handles(tmp_path: Path) -> None:
    import optuna

    from dlrun.sweeping.study import open_storage

    url = f"journal://{tmp_path / 'j' / 'study.log'}"
    one = optuna.create_study(study_name="j", storage=open_storage(url), direction="maximize")
    one.tell(one.ask(), 0.5)
    two = optuna.load_study(study_name="j", storage=open_storage(url))
    assert [t.value for t in two.trials] == [0.5]


def test_thread_budget_is_the_share_of_cores_and_respects_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from dlrun.errors import ConfigError
    from dlrun.sweeping.threads import available_cores, launcher_parallelism, thread_budget

    joblib = OmegaConf.create(
        {"launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 4}}
    )
    assert launcher_parallelism(joblib) == 4
    assert (
        launcher_parallelism(
            OmegaConf.create({"launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}})
        )
        == 1
    )
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_budget(OmegaConf.create({"resources": {"threads": None}})) == available_cores()  # one job: all
    assert thread_budget(OmegaConf.create({"resources": {"threads": 3}})) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert thread_budget(OmegaConf.create({"resources": {"threads": None}})) is None  # the user's setting stands
    with pytest.raises(ConfigError, match="resources.threads"):
        thread_budget(OmegaConf.create({"resources": {"threads": 0}}))


def test_best_yaml_is_a_preset_of_the_overrides() -> None:
    from dlrun.sweeping.report import best_preset

    text = best_preset(
        ["model=mlp", "trainer.max_epochs=3", "optimizer.lr=0.01", "model.hidden_sizes=[512,256]"], ["hi"]
    )
    assert text.startswith("# @package _global_\n# hi\n")
    data = yaml.safe_load(text)
    assert data == {
        "defaults": [{"override /model": "mlp"}],
        "trainer": {"max_epochs": 3},
        "optimizer": {"lr": 0.01},
        "model": {"hidden_sizes": [512, 256]},
    }


def test_seed_statistics_group_configurations_and_name_parent_metrics() -> None:
    from dlrun.sweeping.seed_stats import fill_stats, parent_metrics, seed_groups
    from dlrun.sweeping.table import JobRow

    rows = [
        JobRow(0, ["model=mlp", "seed=1"], "FINISHED", 0.90),
        JobRow(1, ["model=mlp", "seed=2"], "FINISHED", 0.92),
        JobRow(2, ["model=cnn", "seed=1"], "FINISHED", 0.98),
        JobRow(3, ["model=cnn", "seed=2"], "FAILED", None),
    ]
    groups = seed_groups(rows, [])
    assert [g.label for g in groups] == ["model=mlp", "model=cnn"]
    tests = {0: 0.5, 1: 0.7, 2: 0.9}
    names = fill_stats(groups, "val/acc", lambda r: {"test/acc": tests[r.num]})
    assert names == ["val/acc", "test/acc"]
    metrics = parent_metrics(groups, "val/acc", "max")
    assert metrics["val/acc_mean"] == pytest.approx(0.98) and metrics["val/acc_n"] == 1  # best: cnn, one seed
    assert "val/acc_std" not in metrics  # no spread from one value
    assert metrics["model-mlp/test/acc_mean"] == pytest.approx(0.6)
    assert metrics["model-mlp/test/acc_std"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert seed_groups([JobRow(0, ["model=mlp"], "FINISHED", 1.0), JobRow(1, ["model=cnn"], "FINISHED", 1.0)], []) == []


def test_job_outcomes_become_trial_states() -> None:
    from hydra.core.utils import JobReturn, JobStatus

    from dlrun.sweeping.bookkeeping import JobFailed, JobPruned
    from dlrun.sweeping.sweeper import outcome

    def ret(value, status=JobStatus.COMPLETED):
        job = JobReturn(status=status)
        job._return_value = value
        return job

    state, value, error = outcome(ret(0.5))
    assert (state.name, value, error) == ("COMPLETE", 0.5, None)
    assert outcome(ret(JobPruned(2, 0.1)))[0].name == "PRUNED"
    state, value, error = outcome(ret(JobFailed("ValueError: x")))
    assert (state.name, value, error) == ("FAIL", None, "ValueError: x")
    assert outcome(ret(None))[0].name == "FAIL" and "not a number" in outcome(ret(None))[2]
    assert outcome(ret(float("nan")))[0].name == "FAIL"
    assert outcome(ret(RuntimeError("boom"), JobStatus.FAILED))[2] == "RuntimeError: boom"
