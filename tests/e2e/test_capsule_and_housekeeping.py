"""What a run records to be run again (capsule/), and the changes users make to records by hand (issue 24)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import all_runs, dlrun, early, git, store_uri


def test_a_run_records_its_uncommitted_code_and_environment(early_result: Callable) -> None:
    early_result(run_in_a_git_project)  # its checks run with it, from the session's start (helpers.early)


@early
def run_in_a_git_project(tmp_path: Path) -> None:
    """A project in git with an uncommitted change and an untracked file, trained once; what the run recorded."""
    import torch

    from dlrun.starter import init_project

    project = tmp_path / "project"
    init_project(project)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "start")
    head = git(project, "rev-parse", "HEAD")
    with (project / "tinynet.py").open("a", encoding="utf-8") as handle:
        handle.write("# a change not yet committed\n")
    (project / "helper_module.py").write_text("VALUE = 3\n", encoding="utf-8")
    store = store_uri(tmp_path)
    result = dlrun(["experiment=spirals", "trainer.max_epochs=1", f"tracking.uri={store}"], project)
    assert result.returncode == 0, result.describe()
    [run] = all_runs(store)
    artifacts = Path(run.info.artifact_uri.removeprefix("file://")) / "capsule"
    code = json.loads((artifacts / "code.json").read_text())
    assert code["kind"] == "git" and code["commit"] == head and code["dirty"] and not code["capped"]
    assert code["untracked_files"] == ["helper_module.py"]  # not the run's own outputs/ or mlartifacts/
    diff = (artifacts / "code.diff").read_text()
    assert "+# a change not yet committed" in diff and "+VALUE = 3" in diff
    environment = json.loads((artifacts / "environment.json").read_text())
    assert environment["torch"]["version"] == torch.__version__
    assert environment["distributions"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert run.data.tags["dlrun.code_digest"].startswith(head[:12])

    # One line changed between two runs: `dlrun runs diff` shows that line and no package difference.
    text = (project / "tinynet.py").read_text(encoding="utf-8")
    (project / "tinynet.py").write_text(text.replace("not yet committed", "changed again"), encoding="utf-8")
    again = dlrun(["experiment=spirals", "trainer.max_epochs=1", f"tracking.uri={store}"], project)
    assert again.returncode == 0, again.describe()
    shown = dlrun(
        ["runs", "diff", run.info.run_id[:8], all_runs(store)[0].info.run_id[:8], "--json", "--tracking-uri", store],
        project,
    )
    code = json.loads(shown.stdout)["code"]
    assert code["only_a"] == ["+# a change not yet committed"] and code["only_b"] == ["+# a change changed again"]
    assert json.loads(shown.stdout)["environment"] == []


@pytest.fixture
def store_with_a_sweep(tmp_path: Path) -> tuple[str, str, list[str]]:
    """A store holding a sweep parent with two job runs, and one more run."""
    from mlflow.tracking import MlflowClient

    uri = store_uri(tmp_path)
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment, run_name="search").info.run_id
    jobs = [
        client.create_run(experiment, run_name=f"job-{i}", tags={"mlflow.parentRunId": parent}).info.run_id
        for i in range(2)
    ]
    other = client.create_run(experiment, run_name="other").info.run_id
    for run_id in (parent, *jobs, other):
        client.set_terminated(run_id, "FINISHED")
    return uri, parent, [*jobs, other]


def test_tag_note_delete_and_restore(store_with_a_sweep: tuple[str, str, list[str]], capsys) -> None:
    from mlflow.tracking import MlflowClient

    from dlrun.browse.commands import runs_main

    uri, parent, (job_a, job_b, other) = store_with_a_sweep
    client = MlflowClient(uri)
    store = ["--tracking-uri", uri]
    assert runs_main(["tag", other[:8], "owner=me", "stage=draft", *store]) == 0
    assert runs_main(["tag", other[:8], "stage=", *store]) == 0  # KEY= removes it
    tags = client.get_run(other).data.tags
    assert tags["owner"] == "me" and "stage" not in tags
    assert runs_main(["tag", other[:8], "dlrun.task=x", *store]) == 2
    assert "dlrun's and MLflow's own tags are not set by hand" in capsys.readouterr().err
    assert runs_main(["note", other[:8], "first", "try", *store]) == 0
    assert client.get_run(other).data.tags["mlflow.note.content"] == "first try"

    assert runs_main(["delete", parent[:8], *store]) == 0
    states = {r: client.get_run(r).info.lifecycle_stage for r in (parent, job_a, job_b, other)}
    assert states == {parent: "deleted", job_a: "deleted", job_b: "deleted", other: "active"}
    assert runs_main(["restore", parent[:8], *store]) == 0
    assert {client.get_run(r).info.lifecycle_stage for r in (parent, job_a, job_b)} == {"active"}
    assert runs_main(["restore", other[:8], *store]) == 1  # not deleted: no deleted run starts with it
    assert "no MLflow run id starts with" in capsys.readouterr().err
