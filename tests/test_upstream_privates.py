"""Private parts of Hydra, Lightning and MLflow that dlrun uses or patches, each pinned by a test.

pyproject.toml bounds the versions these were checked against. When an upgrade changes one of them, the
test says which upstream part moved and which dlrun module relies on it, instead of dlrun failing at run
time in a user's hands.
"""

from __future__ import annotations

import inspect

import pytest


def moved(part: str, user: str, detail: str) -> str:
    return f"upstream change: {part} {detail}; dlrun's {user} relies on it (update it, or pin the version in pyproject.toml)"


def test_hydra_locate() -> None:
    """dlrun.config.build.locate imports ``_target_`` strings with Hydra's own resolver."""
    try:
        from hydra._internal.utils import _locate
    except ImportError as err:
        pytest.fail(moved("hydra._internal.utils._locate", "config/build.py locate()", f"is gone ({err})"))
    assert list(inspect.signature(_locate).parameters) == ["path"], moved(
        "hydra._internal.utils._locate", "config/build.py locate()", "changed its signature"
    )
    assert _locate("torch.optim.Adam").__name__ == "Adam"
    with pytest.raises(ImportError):
        _locate("dlrun.no_such_module.Thing")


def test_hydra_sources_registry_structured_source_has_a_store() -> None:
    """dlrun.config.search_path.share_config_store patches the structured source's ``__deepcopy__`` to share ``store``."""
    try:
        from hydra._internal.sources_registry import SourcesRegistry
    except ImportError as err:
        pytest.fail(moved("hydra._internal.sources_registry.SourcesRegistry", "config/search_path.py share_config_store()", f"is gone ({err})"))
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the config sources, as dlrun's start-up does
    source = SourcesRegistry.instance().resolve("structured")

    instance = source(provider="test", path="structured://")
    assert isinstance(getattr(instance, "store", None), ConfigStore), moved(
        "Hydra's StructuredConfigSource", "config/search_path.py _copy_sharing_store()", "no longer keeps the ConfigStore in .store"
    )


def test_hydra_save_config() -> None:
    """dlrun.api writes the job's ``.hydra/`` record with Hydra's ``_save_config(cfg, filename, output_dir)``."""
    try:
        from hydra.core.utils import _save_config
    except ImportError as err:
        pytest.fail(moved("hydra.core.utils._save_config", "api.py", f"is gone ({err})"))
    assert list(inspect.signature(_save_config).parameters) == ["cfg", "filename", "output_dir"], moved(
        "hydra.core.utils._save_config", "api.py", "changed its signature"
    )


def test_lightning_hydra_subprocess_command() -> None:
    """dlrun.training.ddp.use_job_command replaces the module global Lightning's DDP launcher calls for child commands."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    original = getattr(subprocess_script, "_hydra_subprocess_cmd", None)
    assert callable(original), moved(
        "pytorch_lightning.strategies.launchers.subprocess_script._hydra_subprocess_cmd", "training/ddp.py", "is gone"
    )
    assert list(inspect.signature(original).parameters) == ["local_rank"], moved(
        "_hydra_subprocess_cmd", "training/ddp.py child_command()", "changed its signature"
    )
    source = inspect.getsource(subprocess_script._SubprocessScriptLauncher)
    assert "command, cwd = _hydra_subprocess_cmd(local_rank)" in source, moved(
        "_SubprocessScriptLauncher", "training/ddp.py", "no longer calls the module-level _hydra_subprocess_cmd(local_rank)"
    )


def test_lightning_logger_connector_should_update_logs() -> None:
    """dlrun.training.progress.step_is_shown reads ``trainer._logger_connector.should_update_logs``."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    connector = getattr(trainer, "_logger_connector", None)
    assert connector is not None, moved("Trainer._logger_connector", "training/progress.py", "is gone")
    assert isinstance(type(connector).__dict__.get("should_update_logs"), property), moved(
        "_LoggerConnector.should_update_logs", "training/progress.py", "is no longer a property"
    )


def test_lightning_model_checkpoint_internals() -> None:
    """dlrun.training.checkpointing.ModelCheckpoint skips per-step work by reading two private settings."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    callback = ModelCheckpoint()
    for name in ("_every_n_train_steps", "_train_time_interval"):
        assert hasattr(callback, name), moved(f"ModelCheckpoint.{name}", "training/checkpointing.py", "is gone")


def test_lightning_hparams_type_key() -> None:
    """dlrun.training.checkpointing.plain_checkpoint drops OmegaConf classes stored under Lightning's hparams-type key."""
    import pytorch_lightning as pl

    assert pl.LightningModule.CHECKPOINT_HYPER_PARAMS_TYPE == "hparams_type", moved(
        "LightningModule.CHECKPOINT_HYPER_PARAMS_TYPE", "training/checkpointing.py", "was renamed"
    )
    assert pl.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY == "hyper_parameters"


def test_mlflow_use_tracking_uri() -> None:
    """dlrun.tracking.pytorch_model points MLflow's global URI at the run's store for one call, then restores it."""
    try:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError as err:
        pytest.fail(moved("mlflow.tracking._tracking_service.utils._use_tracking_uri", "tracking/pytorch_model.py", f"is gone ({err})"))
    import mlflow

    before = mlflow.get_tracking_uri()
    with _use_tracking_uri("sqlite:////nonexistent/dlrun-test.db"):
        assert mlflow.get_tracking_uri() == "sqlite:////nonexistent/dlrun-test.db"
    assert mlflow.get_tracking_uri() == before, moved("_use_tracking_uri", "tracking/pytorch_model.py", "no longer restores the URI")


def test_mlflow_loggers_dlrun_quiets() -> None:
    """dlrun.logs.quiet_third_party filters MLflow's log-then-raise of database errors by logger name."""
    import mlflow.store.db.utils as db_utils

    from dlrun.logs import QUIET_LOGGERS, RAISING_LOGGERS

    assert db_utils._logger.name in RAISING_LOGGERS and db_utils._logger.name in QUIET_LOGGERS, moved(
        "mlflow.store.db.utils._logger", "logs.py", f"is now named {db_utils._logger.name}"
    )
    source = inspect.getsource(db_utils)
    assert "Creating initial MLflow database tables" in source, moved(
        "mlflow.store.db.utils", "logs.py", "no longer announces new tables there (the quiet logger may have moved)"
    )
