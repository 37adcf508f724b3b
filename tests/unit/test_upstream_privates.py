"""Private parts of Lightning, Hydra, OmegaConf, MLflow, Optuna and torch: all in ``dlrun._upstream``, each pinned.

pyproject.toml bounds the versions these were checked against. When an upgrade moves one of them, the
test says which upstream part moved and which dlrun feature relies on it, instead of dlrun failing at run
time in a user's hands. ``test_no_private_access_outside_upstream`` keeps new ones from appearing elsewhere.
"""

from __future__ import annotations

import ast
import inspect
import time
from pathlib import Path

import pytest

from dlrun import _upstream
from helpers import REPO

# Hydra's config keys, and namedtuple's documented API
PUBLIC_UNDERSCORED = {
    "_target_",
    "_partial_",
    "_args_",
    "_convert_",
    "_recursive_",
    "_self_",
    "_fields",
    "_asdict",
    "_replace",
}


def moved(part: str, feature: str, detail: str) -> str:
    return (
        f"upstream change: {part} {detail}; dlrun's {feature} relies on it "
        "(update dlrun/_upstream.py, or pin the version)"
    )


# -- the scanner ----------------------------------------------------------------------------------------


def private_accesses(source: str) -> list[str]:
    """Upstream private names a module's source touches: imports, attributes of other objects, inherited ones.

    ``self._x`` counts unless the same file assigns ``self._x`` or defines ``_x`` (then it is the module's own).
    """
    tree = ast.parse(source)
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in ast.walk(tree):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name):
                own.add(target.id)
            elif isinstance(target, ast.Attribute):
                own.add(target.attr)
            elif isinstance(target, ast.Tuple):
                own.update(e.attr if isinstance(e, ast.Attribute) else getattr(e, "id", "") for e in target.elts)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            own.update(a.arg for a in node.args.args + node.args.kwonlyargs)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] not in ("dlrun", "__future__")
        ):
            names = [a.name for a in node.names]
            if any(p.startswith("_") for p in node.module.split(".")) or any(
                n.startswith("_") and not n.startswith("__") for n in names
            ):
                found.append(f"from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if any(p.startswith("_") for p in a.name.split(".")[1:])]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr not in own and node.attr not in PUBLIC_UNDERSCORED:
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                name = node.args[1].value
                if name.startswith("_") and not name.startswith("__") and name not in own | PUBLIC_UNDERSCORED:
                    found.append(f"{node.func.id}(..., {name!r})")
    return found


def test_no_private_access_outside_upstream() -> None:
    offenders = {}
    for path in sorted((REPO / "src").rglob("*.py")):
        if path.name == "_upstream.py":
            continue
        found = private_accesses(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}, f"private upstream names outside dlrun/_upstream.py: {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "from hydra._internal.utils import _locate",
        "from hydra.core.utils import _save_config",
        "x = trainer._logger_connector",
        "class A(B):\n    def f(self):\n        return self._trainer",
        "v = getattr(ret, '_return_value', None)",
        "import torch._dynamo",
    ],
)
def test_the_scanner_sees_private_access(source: str) -> None:
    assert private_accesses(source)


def test_the_scanner_lets_own_privates_pass() -> None:
    own = (
        "class A:\n    def __init__(self):\n        self._n = 1\n"
        "    def f(self):\n        return self._n + _helper()\n\ndef _helper():\n    return 1\n"
    )
    assert private_accesses(own + "node._target_\n") == []


# -- Hydra ----------------------------------------------------------------------------------------------


def test_hydra_locate() -> None:
    """``_target_`` strings are imported with Hydra's own resolver (config/build.py locate)."""
    assert _upstream.hydra_locate("torch.optim.Adam").__name__ == "Adam"
    with pytest.raises(ImportError):
        _upstream.hydra_locate("dlrun.no_such_module.Thing")


def test_hydra_structured_source_has_a_store() -> None:
    """config/search_path.share_config_store patches the structured source's ``__deepcopy__`` to share ``store``."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the config sources, as dlrun's start-up does
    source = _upstream.hydra_structured_source()
    assert source is not None, moved(
        "hydra._internal.sources_registry", "fast `dlrun --help`", "has no structured source"
    )
    assert isinstance(getattr(source(provider="test", path="structured://"), "store", None), ConfigStore), moved(
        "Hydra's StructuredConfigSource",
        "fast `dlrun --help` (config/search_path.py)",
        "no longer keeps the ConfigStore in .store",
    )


def test_hydra_save_config(tmp_path: Path) -> None:
    """``dlrun.run`` writes the job's ``.hydra/`` record like the CLI (api.py)."""
    from omegaconf import OmegaConf

    _upstream.hydra_save_config(OmegaConf.create({"a": 1}), "config.yaml", tmp_path / ".hydra")
    assert (tmp_path / ".hydra" / "config.yaml").read_text().strip() == "a: 1"


def test_hydra_config_source_helpers(tmp_path: Path) -> None:
    """Presets in experiments/ are served by dlrun's config source (config/search_path.py)."""
    from hydra.plugins.config_source import ConfigSource

    assert _upstream.hydra_config_header("# @package _global_\nx: 1\n").get("package") == "_global_"

    assert _upstream.hydra_normalize_config_name("experiment/a") == "experiment/a.yaml"
    assert "_list_add_result" in ConfigSource.__dict__, moved(
        "ConfigSource._list_add_result", "listing presets", "is gone"
    )


def test_hydra_job_return_value() -> None:
    """Sweep bookkeeping and the Optuna sweeper read what a job returned without re-raising (``_return_value``)."""
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn()
    ret.status, ret.return_value = JobStatus.COMPLETED, 0.5
    assert _upstream.hydra_job_value(ret) == 0.5
    failed = JobReturn()
    failed.status, failed.return_value = JobStatus.FAILED, ValueError("x")
    assert isinstance(_upstream.hydra_job_value(failed), ValueError)


# -- Lightning ------------------------------------------------------------------------------------------


def test_lightning_ddp_child_command() -> None:
    """DDP inside Hydra jobs and sweeps (tasks/ddp.py) replaces the launcher's module-level child command."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    original = subprocess_script.__dict__.get("_hydra_subprocess_cmd")
    assert callable(original), moved("subprocess_script._hydra_subprocess_cmd", "DDP in Hydra jobs", "is gone")
    assert list(inspect.signature(original).parameters) == ["local_rank"], moved(
        "_hydra_subprocess_cmd", "DDP in Hydra jobs", "changed its signature"
    )
    source = inspect.getsource(subprocess_script)
    assert "command, cwd = _hydra_subprocess_cmd(local_rank)" in source, moved(
        "_SubprocessScriptLauncher",
        "DDP in Hydra jobs",
        "no longer calls the module-level _hydra_subprocess_cmd(local_rank)",
    )
    try:
        _upstream.lightning_set_ddp_child_command(len)
        assert subprocess_script.__dict__["_hydra_subprocess_cmd"] is len
    finally:
        _upstream.lightning_set_ddp_child_command(original)


def test_lightning_trainer_internals() -> None:
    """Progress and step logging (callbacks/progress.py, objectives' train/loss) read the logger connector."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    assert isinstance(_upstream.lightning_step_logs_due(trainer), bool), moved(
        "Trainer._logger_connector.should_update_logs", "train/loss logging", "is gone"
    )
    module = pl.LightningModule()
    assert _upstream.lightning_attached_trainer(module) is None
    module.trainer = trainer
    assert _upstream.lightning_attached_trainer(module) is trainer


def test_lightning_cluster_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """callbacks/interrupt.py holds SLURM's requeue signal when the trainer's environment is SLURM's."""
    import pytorch_lightning as pl
    from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    kwargs = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "accelerator": "cpu"}
    assert isinstance(_upstream.lightning_cluster_environment(pl.Trainer(**kwargs)), LightningEnvironment)
    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "7"}.items():
        monkeypatch.setenv(name, value)
    environment = _upstream.lightning_cluster_environment(pl.Trainer(**kwargs))
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue, moved(
        "Trainer._accelerator_connector.cluster_environment", "SLURM requeue", "no longer finds SLURM"
    )


def test_lightning_model_checkpoint_settings() -> None:
    """callbacks/checkpointing.ModelCheckpoint skips per-step work unless a step or time interval is set."""
    from datetime import timedelta

    from pytorch_lightning.callbacks import ModelCheckpoint

    assert not _upstream.lightning_checkpoints_per_step(ModelCheckpoint())
    assert _upstream.lightning_checkpoints_per_step(ModelCheckpoint(every_n_train_steps=5))
    assert _upstream.lightning_checkpoints_per_step(ModelCheckpoint(train_time_interval=timedelta(minutes=1)))


def test_lightning_current_fx_name() -> None:
    """objectives/hot_path.DirectFxNameWrites intercepts the attribute Lightning writes around every hook."""
    import pytorch_lightning as pl

    assert _upstream.FX_NAME_ATTR in inspect.getsource(pl.LightningModule.log), moved(
        "LightningModule._current_fx_name", "the hot-path write bypass", "is no longer read by log()"
    )


def test_lightning_hparams_type_key() -> None:
    """callbacks/checkpointing.plain_checkpoint drops OmegaConf classes stored under Lightning's hparams-type key."""
    import pytorch_lightning as pl

    assert pl.LightningModule.CHECKPOINT_HYPER_PARAMS_TYPE == "hparams_type"
    assert pl.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY == "hyper_parameters"


# -- OmegaConf ------------------------------------------------------------------------------------------


def test_omegaconf_raw_value() -> None:
    """Restored configs keep interpolations unresolved (config/restore.py)."""
    from omegaconf import DictConfig, OmegaConf

    cfg = OmegaConf.create({"a": "${b}", "b": 1, "c": {"d": 2}})
    assert _upstream.omegaconf_raw_value(cfg, "a") == "${b}"
    assert isinstance(_upstream.omegaconf_raw_value(cfg, "c"), DictConfig)
    assert _upstream.omegaconf_raw_value(cfg, "missing") is None


# -- MLflow ---------------------------------------------------------------------------------------------


def test_mlflow_tracking_uri() -> None:
    """tracking/pytorch_model points MLflow's global URI at the run's store for one call, then restores it."""
    import mlflow

    before = mlflow.get_tracking_uri()
    with _upstream.mlflow_tracking_uri("sqlite:////nonexistent/dlrun-test.db"):
        assert mlflow.get_tracking_uri() == "sqlite:////nonexistent/dlrun-test.db"
    assert mlflow.get_tracking_uri() == before, moved(
        "_use_tracking_uri", "logged models", "no longer restores the URI"
    )
    from mlflow.tracking._tracking_service import utils  # the exact-restore path, not the fallback

    assert hasattr(utils, "_use_tracking_uri"), moved("_use_tracking_uri", "logged models", "is gone (fallback in use)")


def test_mlflow_loggers_dlrun_quiets() -> None:
    """dlrun.logs.quiet_third_party filters MLflow's log-then-raise of database errors by logger name."""
    import mlflow.store.db.utils as db_utils

    from dlrun.logs import QUIET_LOGGERS, RAISING_LOGGERS

    name = db_utils.__dict__["_logger"].name
    assert name == _upstream.MLFLOW_DB_LOGGER and name in RAISING_LOGGERS and name in QUIET_LOGGERS, moved(
        "mlflow.store.db.utils._logger", "quiet store errors (logs.py)", f"is now named {name}"
    )


# -- Optuna ---------------------------------------------------------------------------------------------


def test_optuna_trial_handle() -> None:
    """Pruning reports (sweeping/callback.py) act on a stored trial through a live handle."""
    import optuna

    study = optuna.create_study()
    frozen = study.ask()
    stored = study.get_trials(deepcopy=False)[0]
    _upstream.optuna_trial(study, stored).set_user_attr("dlrun.x", 1)
    assert study.get_trials()[0].user_attrs == {"dlrun.x": 1}
    assert stored.number == frozen.number


def test_optuna_heartbeat_interface_and_thread(tmp_path: Path) -> None:
    """Workers' leases on trials (sweeping/study.py, sweeper.py): journal files implement Optuna's heartbeat
    interface, and a worker renews its trials' heartbeats with Optuna's own thread, as ``optimize`` does."""
    import optuna

    base = _upstream.optuna_heartbeat_base()
    abstract = set(getattr(base, "__abstractmethods__", ()))
    expected = {
        "record_heartbeat",
        "_get_stale_trial_ids",
        "get_heartbeat_interval",
        "get_heartbeat_stale_trial_callback",
    }
    assert abstract == expected, moved(
        "optuna.storages._heartbeat.BaseHeartbeat", "journal leases", f"now asks {abstract}"
    )
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    with _upstream.optuna_heartbeat(study, trial):  # one heartbeat at least, then none
        pass
    time.sleep(2.5)  # SQLite's CURRENT_TIMESTAMP, the heartbeats' clock, counts whole seconds
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state.name == "FAIL", moved("get_heartbeat_thread", "workers' leases", "records nothing")


# -- torch ----------------------------------------------------------------------------------------------


def test_torch_bases_and_compile() -> None:
    """Shape errors name what a layer takes (models/inspection.py); compiled networks keep their keys
    (tasks/compile.py)."""
    import torch
    from torch import nn

    conv, norm = _upstream.torch_conv_and_norm_bases()
    assert isinstance(nn.Conv1d(1, 1, 1), conv) and isinstance(nn.Conv3d(1, 1, 1), conv)
    assert isinstance(nn.BatchNorm2d(3), norm)
    net = nn.Linear(2, 2)
    wrapped = torch.compile(net, backend="eager")
    assert _upstream.torch_compiled_original(wrapped) is net
    assert next(iter(wrapped.state_dict())).startswith(_upstream.COMPILE_PREFIX)
    assert not _upstream.torch_is_compiled_in_place(net)
    net.compile(backend="eager")
    assert _upstream.torch_is_compiled_in_place(net)
