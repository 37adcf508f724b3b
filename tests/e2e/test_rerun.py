"""``dlrun rerun``: a run of a user's git project, with an uncommitted change to its model file, run again from its
record alone: in a fresh clone, and after the change was reverted by hand; doctored and bad records (issue 24)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import Result, all_runs, dlrun, early, git, store_uri

# One thread, a seed and tiny limits on real MNIST: a few seconds of training, bit-exact on a CPU.
TRAIN = [
    "data=mnist", "model=tiny", "model.hidden=16", "data.batch_size=32", "data.eval_batch_size=200",
    "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "callbacks.plots=false", "seed=3",
]  # fmt: skip
THREADS = {"OMP_NUM_THREADS": "1"}
CHANGE = ("nn.GELU()", "nn.Tanh()")  # the uncommitted change to the project's model file

# a training, a fresh clone and two reruns (about 50 s of two cores); tests/unit/test_rerun_check.py stays in the
# default suite
pytestmark = pytest.mark.slow


@dataclass
class Reruns:
    """The project, its store and source run, and the two reruns with the runs they recorded."""

    project: Path
    clone: Path
    store: str
    source: Any
    in_clone: Result
    reverted: Result
    runs: list


@early
def train_and_rerun(tmp_path: Path) -> Reruns:
    """Train in a git project with one uncommitted change to tinynet.py; rerun in a fresh clone, then in the
    project with the change reverted by hand."""
    from dlrun.starter import init_project

    project = tmp_path / "project"
    init_project(project)
    (project / ".gitignore").write_text("outputs/\n", encoding="utf-8")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "start")
    model = project / "tinynet.py"
    model.write_text(model.read_text(encoding="utf-8").replace(*CHANGE), encoding="utf-8")
    store = store_uri(tmp_path)
    trained = dlrun([*TRAIN, f"tracking.uri={store}"], project, env=THREADS)
    assert trained.returncode == 0, trained.describe()
    [source] = all_runs(store)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)  # at the recorded commit
    in_clone = dlrun(["rerun", source.info.run_id, "--check", "--tracking-uri", store], clone, env=THREADS)
    git(project, "checkout", "--", "tinynet.py")  # the change reverted by hand
    reverted = dlrun(["rerun", source.info.run_id[:8], "--check", "--tracking-uri", store], project, env=THREADS)
    return Reruns(project, clone, store, source, in_clone, reverted, all_runs(store))


def artifacts(run: Any) -> Path:
    return Path(run.info.artifact_uri.removeprefix("file://"))


def rerun_of(done: Reruns, result: Result) -> Any:
    """The run a rerun recorded (it prints its id)."""
    assert result.returncode == 0, result.describe()
    [new_id] = [line.split("new run ")[1].split()[0] for line in result.stdout.splitlines() if "new run " in line]
    return next(r for r in done.runs if r.info.run_id == new_id)


def test_rerun_in_a_fresh_clone_reproduces_val_and_test_accuracy_exactly(early_result: Callable) -> None:
    done: Reruns = early_result(train_and_rerun)
    source = done.source
    new = rerun_of(done, done.in_clone)
    assert new.data.tags["dlrun.rerun_of"] == source.info.run_id
    assert new.data.tags["dlrun.config_hash"] == source.data.tags["dlrun.config_hash"]  # the same config rebuilt
    for key in ("val/acc", "test/acc", "val/loss", "test/loss"):
        assert new.data.metrics[key] == source.data.metrics[key], key
    assert "check: all 4 metrics agree exactly" in done.in_clone.stdout
    # The recorded code ran: the same commit and the same uncommitted diff, rebuilt outside the clone.
    diff = (artifacts(source) / "capsule" / "code.diff").read_text()
    assert f"+{' ' * 12}layers += [nn.Linear(width, hidden), {CHANGE[1]}" in diff
    assert (artifacts(new) / "capsule" / "code.diff").read_text() == diff
    assert new.data.tags["dlrun.code_digest"] == source.data.tags["dlrun.code_digest"]
    assert new.data.params["seed"] == "3" and new.data.params["resources.threads_used"] == "1"
    # The block before the run: code from the clone's repository, the data checked, nothing different.
    out = done.in_clone.stdout
    assert f"commit {source.data.tags['mlflow.source.git.commit'][:12]} (from {done.clone})" in out
    assert "+ capsule/code.diff (1 file: tinynet.py)" in out
    assert "data     mnist train,val" in out and ": different" not in out and "env      same:" in out
    # The clone's working tree is as it was: clean, without the change.
    assert git(done.clone, "status", "--porcelain") == ""
    assert CHANGE[0] in (done.clone / "tinynet.py").read_text()


def test_rerun_applies_the_recorded_diff_after_the_change_was_reverted(early_result: Callable) -> None:
    done: Reruns = early_result(train_and_rerun)
    source = done.source
    new = rerun_of(done, done.reverted)
    assert new.data.tags["dlrun.rerun_of"] == source.info.run_id
    assert new.data.metrics["val/acc"] == source.data.metrics["val/acc"]
    assert new.data.metrics["test/acc"] == source.data.metrics["test/acc"]
    assert new.data.tags["dlrun.code_digest"] == source.data.tags["dlrun.code_digest"]
    assert git(done.project, "status", "--porcelain") == ""  # the reverted file stays reverted
    assert len(done.runs) == 3 and {r.info.status for r in done.runs} == {"FINISHED"}
    [after] = [r for r in done.runs if r.info.run_id == source.info.run_id]  # the reruns never wrote to it
    assert (after.data.tags, after.data.metrics, after.info.end_time) == (
        source.data.tags,
        source.data.metrics,
        source.info.end_time,
    )


def test_runs_show_lists_the_logged_model_and_the_capsule(early_result: Callable, capsys) -> None:
    from dlrun.browse.commands import runs_main

    done: Reruns = early_result(train_and_rerun)
    source, ref = done.source, done.source.info.run_id[:8]
    assert runs_main(["show", ref, "--json", "--tracking-uri", done.store]) == 0
    info = json.loads(capsys.readouterr().out)
    [model] = info["models"]
    assert model["name"] == "model" and model["status"] == "READY" and model["uri"].startswith("models:/m-")
    assert (Path(model["location"].removeprefix("file://")) / "MLmodel").is_file()
    from dlrun.browse.client_reader import ClientReader
    from dlrun.browse.sqlite_reader import SqliteReader

    run_id = source.info.run_id  # the fast reader lists what MLflow's client lists
    assert SqliteReader(done.store).logged_models(run_id) == ClientReader(done.store).logged_models(run_id)
    capsule = info["capsule"]
    assert (capsule["kind"], capsule["dirty"], capsule["changed_files"]) == ("git", True, ["tinynet.py"])
    assert capsule["commit"] == source.data.tags["mlflow.source.git.commit"]
    assert capsule["digest"] == source.data.tags["dlrun.code_digest"]
    files = sorted(f["path"] for f in capsule["files"])
    assert files == [f"capsule/{name}" for name in ("code.diff", "code.json", "environment.json")]
    assert capsule["threads"] == 1 and capsule["env"] == {"OMP_NUM_THREADS": "1"}
    assert info["commands"]["rerun"] == f"dlrun rerun {ref} --tracking-uri {done.store} --check"
    assert runs_main(["show", ref, "--tracking-uri", done.store]) == 0
    text = capsys.readouterr().out
    assert "logged model model (READY)" in text and "state    dirty: 1 file changed or new (tinynet.py)" in text


def copy_run(done: Reruns, name: str, skip: tuple[str, ...] = (), metrics: bool = True) -> tuple[str, Path]:
    """A new run in the source's experiment with the source's tags, metrics and artifacts (but ``skip``): a record
    to doctor."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(done.store)
    source = done.source
    tags = {k: v for k, v in source.data.tags.items() if k.startswith("dlrun.")}
    copy = client.create_run(source.info.experiment_id, run_name=name, tags=tags).info.run_id
    for key, value in source.data.metrics.items() if metrics else ():
        client.log_metric(copy, key, value)
    for path in sorted(artifacts(source).rglob("*")):
        relative = path.relative_to(artifacts(source))
        if path.is_file() and not str(relative).startswith(skip):
            parent = str(relative.parent)
            client.log_artifact(copy, str(path), None if parent == "." else parent)
    client.set_terminated(copy, "FINISHED")
    return copy, artifacts(client.get_run(copy))


def snapshot(store: str) -> list[tuple]:
    """Every run's id, status, end time, tags and metrics: what a failing rerun must leave as it was."""
    return [
        (r.info.run_id, r.info.status, r.info.end_time, sorted(r.data.tags.items()), sorted(r.data.metrics.items()))
        for r in all_runs(store)
    ]


def test_a_package_version_changed_in_the_record_is_listed(early_result: Callable) -> None:
    done: Reruns = early_result(train_and_rerun)
    copy, folder = copy_run(done, "doctored-env")
    environment = json.loads((folder / "capsule" / "environment.json").read_text())
    real = environment["distributions"]["numpy"]
    environment["distributions"]["numpy"] = "0.0.1"
    (folder / "capsule" / "environment.json").write_text(json.dumps(environment))

    listed = dlrun(["rerun", copy, "--dry-run", "--tracking-uri", done.store], done.project, env=THREADS)
    assert listed.returncode == 0, listed.describe()
    [line] = [line for line in listed.stdout.splitlines() if line.startswith("  env ")]
    assert line == f"  env      1 different (recorded -> here): numpy 0.0.1 -> {real}"
    # `runs diff` lists it too, and a code that differs by one line shows that line (the reruns ran the same code).
    shown = dlrun(["runs", "diff", done.source.info.run_id, copy, "--json", "--tracking-uri", done.store], done.project)
    result = json.loads(shown.stdout)
    assert result["environment"] == [{"key": "numpy", "a": real, "b": "0.0.1"}]
    assert result["code"]["only_a"] == result["code"]["only_b"] == []


@pytest.mark.parametrize("case", ["unknown run", "no capsule", "diff does not apply", "nothing to check"])
def test_bad_records_stop_before_any_run(case: str, early_result: Callable, capsys, monkeypatch) -> None:
    """One line naming the cause, a non-zero exit, no run opened, every recorded run as it was."""
    from dlrun.tasks.rerun import rerun_main

    done: Reruns = early_result(train_and_rerun)
    if case == "unknown run":
        ref, expected = "0123456789abcdef", "no MLflow run id starts with 0123456789abcdef"
    elif case == "no capsule":
        ref, _ = copy_run(done, "no-capsule", skip=("capsule",))
        expected = "no capsule/code.json"
    elif case == "nothing to check":
        ref, _ = copy_run(done, "no-metrics", metrics=False)
        expected = f"--check: run {ref} recorded no val/* or test/* metrics to compare with"
    else:
        ref, folder = copy_run(done, "stale-diff")
        diff = (folder / "capsule" / "code.diff").read_text().replace("width = math.prod", "width = numpy.prod")
        (folder / "capsule" / "code.diff").write_text(diff)
        code = json.loads((folder / "capsule" / "code.json").read_text())
        code["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()  # a consistent record of other code
        (folder / "capsule" / "code.json").write_text(json.dumps(code))
        expected = f"capsule/code.diff: does not apply at commit {code['commit'][:12]}: error: patch failed"
    before = snapshot(done.store)
    monkeypatch.chdir(done.project)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    code = rerun_main([ref, "--check", "--tracking-uri", done.store])
    err = capsys.readouterr().err
    assert code != 0
    [line] = [line for line in err.splitlines() if line.startswith("dlrun: error: ")]
    assert expected in line, err
    assert snapshot(done.store) == before
    assert git(done.project, "status", "--porcelain") == ""
