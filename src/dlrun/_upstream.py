"""Every private part of Lightning, Hydra, OmegaConf, MLflow, Optuna and torch that dlrun touches, one function each.

Nothing else in dlrun reaches into an upstream private name (``tests/unit/test_upstream_privates.py`` fails
when something does, and pins each function below against the installed versions, naming the dlrun
feature that breaks when upstream moves it). pyproject.toml bounds the versions these were checked against.
Imports happen inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# -- Hydra ----------------------------------------------------------------------------------------------


def hydra_locate(path: str) -> Any:
    """The object a ``_target_`` string names, imported the way Hydra's ``instantiate`` does (``_locate``)."""
    from hydra._internal.utils import _locate

    return _locate(path)


def hydra_save_config(cfg: Any, filename: str, output_dir: Any) -> None:
    """Write a job's ``.hydra/`` file exactly as Hydra's own run does (``hydra.core.utils._save_config``)."""
    from hydra.core.utils import _save_config

    _save_config(cfg, filename, output_dir)


def hydra_config_header(text: str) -> dict[str, str]:
    """The ``# @package`` header of a config file's first lines (``ConfigSource._get_header_dict``)."""
    from hydra.plugins.config_source import ConfigSource

    return ConfigSource._get_header_dict(text)


def hydra_normalize_config_name(config_path: str) -> str:
    """``NAME`` or ``NAME.yaml`` as a config source's file name (``ConfigSource._normalize_file_name``)."""
    from hydra.plugins.config_source import ConfigSource

    return ConfigSource._normalize_file_name(config_path)


def hydra_list_add_result(source: Any, files: list[str], file_path: str, file_name: str, results_filter: Any) -> None:
    """Add a group or config found in a folder to a config source's listing (``ConfigSource._list_add_result``)."""
    source._list_add_result(files, file_path, file_name, results_filter)


def hydra_structured_source() -> type | None:
    """The class of Hydra's structured-config source (``hydra._internal.sources_registry``), None when absent."""
    from hydra._internal.sources_registry import SourcesRegistry

    try:
        return SourcesRegistry.instance().resolve("structured")
    except Exception:  # a Hydra without this source: nothing to patch
        return None


def hydra_job_value(job_return: Any) -> Any:
    """What a finished job returned or raised, without re-raising it (``JobReturn._return_value``)."""
    return getattr(job_return, "_return_value", None)


def lightning_set_ddp_child_command(command: Callable[[int], tuple[Any, str]]) -> None:
    """Make Lightning's DDP subprocess launcher build child commands with ``command(local_rank)``.

    Lightning calls the module-level ``_hydra_subprocess_cmd`` of ``subprocess_script`` for Hydra jobs.
    """
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = command


# -- Lightning ------------------------------------------------------------------------------------------

FX_NAME_ATTR = "_current_fx_name"  # the LightningModule attribute Lightning writes around every hook call


def lightning_attached_trainer(module: Any) -> Any:
    """The module's Trainer, or None when it is not attached (the public ``.trainer`` raises then)."""
    return module._trainer


def lightning_step_logs_due(trainer: Any) -> bool:
    """Whether this step's ``self.log(on_step=True)`` values reach the loggers (``log_every_n_steps``)."""
    return trainer._logger_connector.should_update_logs


def lightning_cluster_environment(trainer: Any) -> Any:
    """The trainer's cluster environment (SLURM, torchrun, ...), also under a single-device strategy."""
    return trainer._accelerator_connector.cluster_environment


def lightning_checkpoints_per_step(callback: Any) -> bool:
    """Whether a ``ModelCheckpoint`` saves on a step count or a time interval (else it never acts per step)."""
    return callback._every_n_train_steps >= 1 or callback._train_time_interval is not None


# -- OmegaConf ------------------------------------------------------------------------------------------


def omegaconf_raw_value(cfg: Any, key: str) -> Any:
    """``cfg[key]`` as written, interpolations unresolved: a container node, a leaf's raw value, or None."""
    from omegaconf import DictConfig, ListConfig

    node = cfg._get_node(key)
    if node is None or isinstance(node, (DictConfig, ListConfig)):
        return node
    return node._value()


# -- MLflow ---------------------------------------------------------------------------------------------


@contextmanager
def mlflow_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` inside the block, and restored exactly (also "unset") after."""
    import mlflow

    try:  # restores "unset" exactly, so that a later MLFLOW_TRACKING_URI still applies
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # moved upstream: set and restore the value it had
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
        return
    with _use_tracking_uri(uri):
        yield


MLFLOW_DB_LOGGER = "mlflow.store.db.utils"  # logs database errors before raising them (quieted in dlrun.logs)


# -- Optuna ---------------------------------------------------------------------------------------------


def optuna_trial(study: Any, frozen: Any) -> Any:
    """A live ``Trial`` handle (report, set attributes) for a trial the study already holds (``_trial_id``)."""
    import optuna

    return optuna.trial.Trial(study, frozen._trial_id)


def optuna_heartbeat_base() -> type:
    """The interface a storage implements to hold trials by heartbeat (``optuna.storages._heartbeat.BaseHeartbeat``)."""
    from optuna.storages._heartbeat import BaseHeartbeat

    return BaseHeartbeat


def optuna_heartbeat(study: Any, trial: Any) -> Any:
    """A context manager renewing ``trial``'s heartbeat while it runs (``get_heartbeat_thread``, as ``optimize``
    does); does nothing on a storage without heartbeats."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)


# -- torch ----------------------------------------------------------------------------------------------

COMPILE_PREFIX = "_orig_mod."  # what torch.compile wrappers add to state-dict keys


def torch_conv_and_norm_bases() -> tuple[type, type]:
    """The base classes of every convolution and every batch norm (``_ConvNd``, ``_BatchNorm``)."""
    from torch import nn

    return nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm


def torch_compiled_original(module: Any) -> Any:
    """The module inside a ``torch.compile`` wrapper (``OptimizedModule._orig_mod``), None when not wrapped."""
    return getattr(module, "_orig_mod", None)


def torch_is_compiled_in_place(module: Any) -> bool:
    """Whether ``module.compile()`` compiled this module in place (``Module._compiled_call_impl`` set)."""
    return getattr(module, "_compiled_call_impl", None) is not None
