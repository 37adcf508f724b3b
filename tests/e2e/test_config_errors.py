"""The command line as users meet it: one-line errors before any training, help, printed configs, user presets.

The failing runs share one module-scoped batch. Those Hydra refuses before torch is imported, and the missing
data with download on but offline (the default store, no tracking.uri), run the real ``dlrun`` in a
subprocess, two at a time; the others (``IN_PROCESS``: each would cost a ~5 s process start) run meanwhile
in this process, through ``dlrun.run`` and the CLI's own error mapping (``helpers.dlrun_in_process``). The
same faults run by the command, stderr and all, in ``test_bad_inputs.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import MNIST_FILES, Result, all_runs, dlrun, dlrun_env, dlrun_many, store_uri

# An unreachable proxy makes "offline" certain, whatever network the test machine has.
OFFLINE = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
    "NO_PROXY": "",
}

# case -> (override, exact error line or regex, whether an MLflow run is started before the check fires)
BAD_CONFIGS = {
    "lr_not_float": ("optimizer.lr=abc", r"optimizer\.lr: expected float\b.*, got 'abc'", False),
    "batch_size_zero": ("data.batch_size=0", r"data\.batch_size: must be >= 1, got 0", False),
    "no_such_model": ("model=nope", r"model=nope: no such model; available: cnn, mlp\b.*", False),
    "group_option_typo": ("model=mpl", r"model=mpl: no such model \(did you mean model=mlp\?\); available: .*", False),
    "typo_in_key": ("optimizer.lrr=1", r"optimizer\.lrr: unknown key \(did you mean optimizer\.lr\?\).*", False),
    "new_key": ("+model.foo=1", r"model\.foo: unknown key; allowed: .*\bhidden_sizes\b.*", False),
    "no_such_task": ("task=foo", r"task: 'foo' is not one of .*\btrain\b.*", False),
}


# Past the composition, these import torch and Lightning: in-process, while the processes run. test_bad_inputs.py
# runs lr_not_float and the missing MNIST without download by the command (one-line stderr, exit status).
IN_PROCESS = {"lr_not_float", "batch_size_zero", "new_key", "no_such_task", "no_data_no_download"}


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    jobs: dict[str, tuple] = {}
    for case, (override, _, _) in BAD_CONFIGS.items():
        cwd = tmp_path_factory.mktemp(case)
        jobs[case] = ([override, f"tracking.uri={store_uri(cwd)}"], cwd)
    # No data: once with download off, once with download on but offline (and the default MLflow store).
    cwd = tmp_path_factory.mktemp("no_data_no_download")
    (cwd / "empty").mkdir()
    jobs["no_data_no_download"] = (
        [f"paths.data_dir={cwd / 'empty'}", "data.download=false", f"tracking.uri={store_uri(cwd)}"],
        cwd,
    )
    cwd = tmp_path_factory.mktemp("no_data_offline")
    (cwd / "empty").mkdir()
    jobs["no_data_offline"] = ([f"paths.data_dir={cwd / 'empty'}"], cwd, OFFLINE)
    return dlrun_many(jobs, workers=2, in_process=IN_PROCESS)


def assert_failed_before_training(result: Result) -> None:
    assert result.returncode != 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    assert re.search(r"^epoch \d", result.stdout, flags=re.M) is None, result.describe()
    assert not list(result.cwd.rglob("*.ckpt")), result.describe()


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_one_line_naming_the_key(failures: dict[str, Result], case: str) -> None:
    result = failures[case]
    _, pattern, _ = BAD_CONFIGS[case]
    assert_failed_before_training(result)
    assert result.returncode == 2, result.describe()  # ConfigError's code
    if case not in IN_PROCESS:  # The whole of stderr is the one line: no warnings, no Hydra report.
        assert result.stderr.strip().splitlines() == [f"dlrun: error: {result.error}"], result.describe()
    assert re.fullmatch(pattern, result.error), result.error


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_leaves_a_failed_run_or_none(failures: dict[str, Result], case: str) -> None:
    result = failures[case]
    _, _, starts_run = BAD_CONFIGS[case]
    runs = all_runs(store_uri(result.cwd)) if (result.cwd / "m.db").exists() else []
    if not starts_run:
        assert runs == []
        return
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["dlrun.error"] == f"ConfigError: {result.error}"
    assert not run.data.metrics


def test_missing_data_without_download(failures: dict[str, Result]) -> None:
    result = failures["no_data_no_download"]
    assert_failed_before_training(result)
    folder = result.cwd / "empty" / "mnist"
    assert result.returncode == 1, result.describe()
    assert result.error == f"{folder}: missing {', '.join(MNIST_FILES)} (download is off)"
    (run,) = all_runs(store_uri(result.cwd))
    assert run.info.status == "FAILED"
    assert run.data.tags["dlrun.error"] == f"DataError: {result.error}"
    assert run.data.params["data.download"] == "False"


def test_missing_data_offline_download_and_default_store(failures: dict[str, Result]) -> None:
    result = failures["no_data_offline"]
    assert_failed_before_training(result)
    folder = result.cwd / "empty" / "mnist"
    assert result.returncode == 1, result.describe()
    assert result.error.startswith(f"{folder}: MNIST files missing and download failed")
    assert "DLRUN_DATA_DIR" in result.error
    assert not folder.exists() or not any(folder.iterdir())  # no partial downloads left behind

    # No tracking.uri and no MLFLOW_TRACKING_URI: the store is <cwd>/mlflow.db, artifacts in <cwd>/mlartifacts.
    db = result.cwd / "mlflow.db"
    assert db.is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("mnist")
    assert experiment.artifact_location == (result.cwd / "mlartifacts" / "mnist").as_uri()
    (run,) = all_runs(f"sqlite:///{db}")
    assert run.info.status == "FAILED"
    assert run.data.tags["dlrun.error"].startswith(f"DataError: {folder}: MNIST files missing")
    config = result.cwd / "mlartifacts" / "mnist" / run.info.run_id / "artifacts" / "config.yaml"
    assert yaml.safe_load(config.read_text())["paths"]["data_dir"] == str(result.cwd / "empty")


def test_full_error_shows_the_traceback(tmp_path: Path) -> None:
    result = dlrun(["task=foo", f"tracking.uri={store_uri(tmp_path)}"], tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert re.search(r"ConfigError: task: 'foo' is not one of .*\btrain\b", result.stderr), result.describe()


# ---------------------------------------------------------------- help and printed configs


def test_help_lists_groups(tmp_path: Path) -> None:
    result = dlrun(["--help"], tmp_path)
    assert result.returncode == 0, result.describe()
    groups = dict(re.findall(r"^(\w+): ([\w, ]+)$", result.stdout, flags=re.M))
    assert {"cnn", "mlp"} <= set(groups["model"].split(", "))
    assert {"mnist_cnn", "mnist_mlp"} <= set(groups["experiment"].split(", "))
    assert {"adam", "adamw", "sgd"} <= set(groups["optimizer"].split(", "))
    assert {"mlflow", "none"} <= set(groups["tracking"].split(", "))
    assert "HYDRA_FULL_ERROR=1" in result.stdout
    assert not list(tmp_path.iterdir())  # nothing written


def test_help_does_not_import_lightning_or_mlflow(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "sys.argv = ['dlrun', '--help']\n"
        "from dlrun.cli import main\n"
        "try:\n"
        "    main()\n"
        "    code = 'returned'\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pytorch_lightning', 'lightning', 'mlflow'})\n"
        "print('RESULT ' + json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=dlrun_env(), capture_output=True, text=True, timeout=120
    )
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stderr
    assert json.loads(line[-1][len("RESULT ") :]) == {"code": 0, "heavy": []}
    assert "model: " in proc.stdout


def print_job(args: list[str], cwd: Path) -> dict:
    result = dlrun([*args, "--cfg", "job"], cwd)
    assert result.returncode == 0, result.describe()
    assert not (cwd / "outputs").exists() and not (cwd / "mlflow.db").exists()  # printed, not run
    return yaml.safe_load(result.stdout)


def test_cfg_job_prints_the_config_without_running(tmp_path: Path) -> None:
    cfg = print_job([], tmp_path)
    assert cfg["model"]["_target_"] == "dlrun.models.mlp.MLP"
    assert cfg["model"]["hidden_sizes"] == [512, 512]
    assert cfg["optimizer"]["lr"] == 0.001
    assert cfg["data"]["batch_size"] == 128


def test_cfg_job_with_shipped_preset(tmp_path: Path) -> None:
    cfg = print_job(["experiment=mnist_cnn"], tmp_path)
    assert cfg["model"]["_target_"] == "dlrun.models.cnn.CNN"
    assert cfg["model"]["channels"] == [32, 32, 64, 64] and cfg["model"]["batch_norm"] is True
    assert cfg["trainer"]["max_epochs"] == 15


def test_user_preset_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "my_exp.yaml").write_text(
        "# @package _global_\nmodel:\n  hidden_sizes: [64]\ntrainer:\n  max_epochs: 3\n"
    )
    cfg = print_job(["experiment=my_exp", "optimizer.lr=0.01"], tmp_path)
    assert cfg["model"]["hidden_sizes"] == [64]
    assert cfg["model"]["_target_"] == "dlrun.models.mlp.MLP"
    assert cfg["trainer"]["max_epochs"] == 3
    assert cfg["optimizer"]["lr"] == 0.01


@pytest.fixture
def user_model_dir(tmp_path: Path) -> Path:
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text("_target_: dlrun.models.mlp.MLP\nhidden_sizes: [8]\n")
    return tmp_path


def test_user_model_config_with_explicit_objective(user_model_dir: Path) -> None:
    cfg = print_job(["model=tiny", "objective=classification"], user_model_dir)
    assert cfg["model"] == {"_target_": "dlrun.models.mlp.MLP", "hidden_sizes": [8]}
    assert cfg["objective"]["_target_"] == "dlrun.objectives.classification.ClassificationModule"


def test_user_model_config_alone_gets_the_data_modules_objective(user_model_dir: Path) -> None:
    cfg = print_job(["model=tiny"], user_model_dir)
    assert cfg["objective"]["_target_"] == "dlrun.objectives.classification.ClassificationModule"
    text = print_job(["model=tiny", "data=multi30k"], user_model_dir)
    assert text["objective"]["_target_"] == "dlrun.objectives.translation.TranslationModule"


def test_version_is_dlruns_own() -> None:
    import dlrun

    out = subprocess.run([sys.executable, "-m", "dlrun", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"dlrun {dlrun.__version__}"  # not Hydra's version line
