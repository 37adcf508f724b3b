"""Find a trained model from what a user names: a checkpoint file, an MLflow run id, or ``runs:/RUN_ID``."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be found or read; the message names it."""


@dataclass
class Source:
    """A checkpoint on local disk, what it holds, and the MLflow run that produced it (if known)."""

    path: Path
    checkpoint: dict[str, Any]
    config: dict[str, Any]
    run_id: str | None
    run_name: str | None = None
    experiment: str | None = None

    @property
    def choices(self) -> dict[str, str]:
        """Config group choices of the training job (``data``, ``model``, ...), when the checkpoint recorded them."""
        return dict((self.checkpoint.get("dlrun") or {}).get("choices") or {})

    def name(self) -> str:
        """A readable name of what was trained: the source run's name, else ``<data>-<model>``."""
        if self.run_name:
            return self.run_name
        choices = self.choices
        return f"{choices.get('data', 'dlrun')}-{choices.get('model', 'model')}"


def read_checkpoint(path: Path, key: str = "ckpt") -> dict[str, Any]:
    """Load a Lightning checkpoint as plain data (``weights_only=True``: no code runs from the file)."""
    import torch

    from dlrun.checkpoint_errors import describe_unreadable

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for files that are not checkpoints (a text file: KeyError)
        raise CheckpointError(f"{key}={path}: {describe_unreadable(path, err)}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{key}={path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def resolve(
    ref: str, tracking_uri: str | None, cwd: Path, download_dir: Path | None = None, key: str = "ckpt", describe: bool = True
) -> Source:
    """Turn ``ckpt=...`` into a local checkpoint plus the config of the run that wrote it.

    A path wins over a run id of the same spelling; run ids are looked up in ``tracking_uri``. With
    ``describe``, a path's source run is looked up too (for its name), when the store knows it.
    """
    from dlrun.tracking.artifacts import client_for, download_checkpoint, download_config, parse_run_ref
    from dlrun.tracking.run_ids import resolve_run_id

    ref = str(ref)
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = cwd / path
    run_ref = None if path.exists() else parse_run_ref(ref)
    if run_ref is None:
        if path.is_dir():
            raise CheckpointError(f"{key}={ref}: is a folder; name a .ckpt file inside it, or an MLflow run id")
        if not path.is_file():
            raise CheckpointError(f"{key}={ref}: no such checkpoint file, and not an MLflow run id (8+ hex digits of one) or runs:/RUN_ID")
        checkpoint = read_checkpoint(path, key)
        embedded = checkpoint.get("dlrun") or {}
        config = embedded.get("config")
        if config is None:
            raise CheckpointError(f"{key}={ref}: the checkpoint holds no dlrun config (checkpoint['dlrun']['config'])")
        source = Source(path, checkpoint, config, embedded.get("run_id"))
        if source.run_id and describe:
            _describe_run(source, lambda: client_for(tracking_uri, cwd))
        return source

    run_id, artifact = run_ref
    client = client_for(tracking_uri, cwd)
    run_id = resolve_run_id(client, run_id, key)  # a unique prefix (what tables show) becomes the full id
    dest = download_dir or Path(tempfile.mkdtemp(prefix="dlrun-ckpt-"))
    local = download_checkpoint(client, run_id, dest / run_id, artifact, key)
    checkpoint = read_checkpoint(local, key)
    config = (checkpoint.get("dlrun") or {}).get("config") or download_config(client, run_id)
    if config is None:
        raise CheckpointError(f"{key}={ref}: neither the checkpoint nor the run's config.yaml holds the run's config")
    source = Source(local, checkpoint, config, run_id)
    _describe_run(source, lambda: client)
    return source


def _describe_run(source: Source, client: Any) -> None:
    """Fill in the source run's name and experiment from the store (quietly: a path needs no store)."""
    try:
        mlflow_client = client()
        info = mlflow_client.get_run(source.run_id).info
        source.run_name = info.run_name
        source.experiment = mlflow_client.get_experiment(info.experiment_id).name
    except Exception:  # another store, or none reachable: the checkpoint alone is enough
        return


def load_source(cfg: Any, job: Any, key: str = "ckpt") -> Source:
    """The checkpoint named by ``cfg.ckpt`` for an eval/predict job (downloads go to the job's run dir)."""
    from dlrun.errors import ConfigError

    ref = cfg.get(key)
    if not ref:
        raise ConfigError(f"{key}: task={cfg.task} needs {key}=PATH.ckpt, {key}=RUN_ID or {key}=runs:/RUN_ID")
    return resolve(str(ref), cfg.tracking.uri, job.cwd, job.output_dir / "source", key, describe=cfg.tracking.enabled)
