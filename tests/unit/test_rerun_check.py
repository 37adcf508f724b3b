"""``dlrun rerun --check``'s verdict on two records, and the capsule's patch of a new file (no training)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dlrun.browse.records import RunRecord
from dlrun.errors import UserError
from dlrun.tasks.rerun import Recorded
from dlrun.tasks.rerun_check import check_metrics, expect_exact
from dlrun.tracking.capsule import environment_differences, new_file_patch

CPU_ENV = {"torch": {"version": "2.13.0+cpu", "devices": []}}


def record(metrics: dict[str, float], **params: str) -> RunRecord:
    base = {"trainer.accelerator": "cpu", "resources.threads_used": "1", "seed": "3"}
    return RunRecord("a" * 32, "r", "1", "FINISHED", 1, 2, params={**base, **params}, metrics=metrics)


def test_exact_on_a_cpu_with_the_same_threads_seed_and_torch(capsys) -> None:
    recorded = {"val/acc": 0.5, "test/acc": 0.25, "train/loss": 9.0}
    assert check_metrics(record(recorded), CPU_ENV, record({"val/acc": 0.5, "test/acc": 0.25}), CPU_ENV, None) == 0
    out = capsys.readouterr().out
    assert "agree exactly (CPU, threads 1, seed 3, torch 2.13.0+cpu in both runs)" in out
    assert "train/loss" not in out  # only val/* and test/*
    with pytest.raises(UserError, match=r"1 of 2 metrics differ from the record \(test/acc; must agree exactly\)"):
        check_metrics(record(recorded), CPU_ENV, record({"val/acc": 0.5, "test/acc": 0.25 + 1e-9}), CPU_ENV, None)


def test_other_threads_or_a_gpu_loosen_the_check_and_say_why() -> None:
    assert expect_exact(record({}), CPU_ENV, record({}, **{"resources.threads_used": "2"}), CPU_ENV) == (
        False,
        "not bit-exact: threads 1 -> 2",
    )
    gpu = {"torch": {"version": "2.13.0+cpu", "devices": ["H100"]}}
    exact, why = expect_exact(record({}), CPU_ENV, record({}, **{"trainer.accelerator": "auto"}), gpu)
    assert not exact and why == "not bit-exact: device CPU -> GPU"
    on_gpu = record({}, **{"trainer.accelerator": "gpu"})
    assert expect_exact(on_gpu, gpu, on_gpu, gpu) == (
        False,
        "not bit-exact: device GPU (not bit-exact by default)",
    )
    assert check_metrics(record({"val/acc": 0.5}), CPU_ENV, record({"val/acc": 0.505}, seed="4"), CPU_ENV, None) == 0
    with pytest.raises(UserError, match="val/acc; must agree within 0.001"):
        check_metrics(record({"val/acc": 0.5}), CPU_ENV, record({"val/acc": 0.505}, seed="4"), CPU_ENV, 0.001)


def test_a_missing_metric_disagrees() -> None:
    with pytest.raises(UserError, match=r"\(test/acc; must agree exactly\)"):
        check_metrics(record({"test/acc": 0.5}), CPU_ENV, record({}), CPU_ENV, None)


def test_environment_differences_name_what_changed() -> None:
    a = {"python": "3.11.7", "env": {"OMP_NUM_THREADS": "1"}, "distributions": {"numpy": "2.1", "torch": "2.13"}}
    b = {"python": "3.11.7", "env": {}, "distributions": {"numpy": "2.2", "torch": "2.13", "rich": "14"}}
    assert environment_differences(a, b) == [
        {"key": "$OMP_NUM_THREADS", "a": "1", "b": None},
        {"key": "numpy", "a": "2.1", "b": "2.2"},
        {"key": "rich", "a": None, "b": "14"},
    ]


@pytest.mark.parametrize("text", ["a = 1\nb = 2\n", "no newline at the end", "", "x\n\n"])
def test_a_new_file_patch_recreates_the_file_exactly(tmp_path: Path, text: str) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    patch = tmp_path / "p.diff"
    patch.write_text(new_file_patch("sub/new.py", text) + new_file_patch("other.yaml", "k: v\n"))
    done = subprocess.run(["git", "-C", str(tmp_path), "apply", str(patch)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sub" / "new.py").read_text() == text
    assert (tmp_path / "other.yaml").read_text() == "k: v\n"


def test_a_rerun_keeps_the_recorded_input_paths_and_writes_to_its_own_folder() -> None:
    from omegaconf import OmegaConf

    from dlrun.config.restore import restore_config

    node = {"_target_": "x.Data", "data_dir": "${paths.data_dir}", "logs": "${paths.output_dir}/logs"}
    current = OmegaConf.create({"task": "train", "paths": {"data_dir": "/here/data", "output_dir": "/here/out"}})
    current.data = node
    recorded = {"task": "train", "data": {"_target_": "x.Data", "data_dir": "/then/data", "logs": "/then/out/logs"}}
    rerun = restore_config(current, recorded, [], key="rerun", recorded_inputs=True)
    assert (rerun.data.data_dir, rerun.data.logs) == ("/then/data", "/here/out/logs")
    resumed = restore_config(current, recorded, [])  # resume, eval: this machine's paths for inputs too
    assert (resumed.data.data_dir, resumed.data.logs) == ("/here/data", "/here/out/logs")


def test_the_jobs_command_line_replaces_what_described_the_recorded_job(tmp_path: Path) -> None:
    from dlrun.tasks.rerun import child_overrides

    recorded = Recorded(record({}), Path("."), {}, [], [])
    recorded.overrides = ["model=tiny", "seed=3", "resources.threads=2", "hydra/launcher=joblib", "+trial.number=4"]
    recorded.overrides += ["tracking.uri=sqlite:////old.db", "hydra.run.dir=/old"]
    line = child_overrides(recorded, ["seed=5"], "sqlite:////new.db", tmp_path / "a b", threads=2)
    assert line[:1] == ["model=tiny"] and line[-1] == "seed=5" and "seed=3" not in line
    assert line.count("resources.threads=2") == 1 and "tracking.uri=sqlite:////new.db" in line
    assert not any(o.startswith(("hydra/", "+trial", "tracking.uri=sqlite:////old")) for o in line)
    [run_dir] = [o for o in line if o.startswith("hydra.run.dir=")]
    assert run_dir.startswith(f"hydra.run.dir='{tmp_path}/a b/outputs/")  # quoted: the path has a space
    assert f"rerun={'a' * 32}" in line


def test_a_folder_outside_git_is_rebuilt_from_its_archive_and_digest(tmp_path: Path) -> None:
    import json

    from dlrun.tracking.capsule import code_record
    from dlrun.tracking.code_copy import CodeError, rebuild_code

    project = tmp_path / "project"
    (project / "conf" / "model").mkdir(parents=True)
    (project / "net.py").write_text("WIDTH = 3\n")
    (project / "conf" / "model" / "mine.yaml").write_text("_target_: net.Net\n")
    (project / "outputs").mkdir()
    (project / "outputs" / "run.yaml").write_text("not code\n")  # a run's output, not the project's code
    code, files = code_record(project)
    assert code["kind"] == "folder" and code["files"] == ["conf/model/mine.yaml", "net.py"]
    capsule = tmp_path / "capsule"
    capsule.mkdir()
    (capsule / "code.tar.gz").write_bytes(files["code.tar.gz"])
    copy = rebuild_code(code, capsule, tmp_path / "copy", tmp_path)
    assert (copy.workdir / "net.py").read_text() == "WIDTH = 3\n" and not (copy.workdir / "outputs").exists()
    doctored = json.loads(json.dumps(code)) | {"sha256": "0" * 64}
    with pytest.raises(CodeError, match="capsule/code.tar.gz: its files do not match the digest"):
        rebuild_code(doctored, capsule, tmp_path / "again", tmp_path)
