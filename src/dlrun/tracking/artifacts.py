"""Reading back what a run recorded: its checkpoints, its config, its tags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from dlrun.errors import UserError
from dlrun.tracking.run_ids import RUN_ID, RunNotFound, looks_like_run_id, resolve_run_id  # noqa: F401 - re-exported

CHECKPOINT_DIR = "checkpoints"


def parse_run_ref(text: str) -> tuple[str, str | None] | None:
    """``runs:/ID[/path]`` or a bare run id -> ``(run_id, artifact path or None)``; None otherwise.

    The id may be a unique prefix of 8+ hex digits; ``get_run`` and the downloads below resolve it.
    """
    if text.startswith("runs:/"):
        run_id, _, sub = text.removeprefix("runs:/").strip("/").partition("/")
        return run_id, sub or None
    if looks_like_run_id(text):
        return text, None
    return None


def client_for(uri: str | None, cwd: Path) -> Any:
    """An MLflow client for ``tracking.uri`` (resolved like a training run resolves it)."""
    from mlflow.tracking import MlflowClient

    # A progress bar per downloaded checkpoint is noise on stderr (and in piped output).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from dlrun.tracking.store import check_server, resolve_uri

    resolved, _ = resolve_uri(uri, cwd)
    check_server(resolved)
    return MlflowClient(tracking_uri=resolved)


def get_run(client: Any, run_id: str, key: str = "ckpt") -> Any:
    """The run with ``run_id`` (or a unique prefix of it); UserError naming ``key`` when the store has none."""
    from mlflow.exceptions import MlflowException

    run_id = resolve_run_id(client, run_id, key)
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise RunNotFound(f"{key}={run_id}: no MLflow run with this id in {client.tracking_uri}") from err


def choose_checkpoint(names: list[str]) -> str | None:
    """The checkpoint to load from a run's artifact paths: the highest-named ``epochNNN.ckpt``, else ``last.ckpt``.

    Training uploads only its best checkpoint (by ``objective.monitor``), so there is usually one; the name
    order says nothing about which of several is best.
    """
    ckpts = sorted(n for n in names if n.endswith(".ckpt"))
    epochs = [n for n in ckpts if Path(n).name != "last.ckpt"]
    return (epochs or ckpts or [None])[-1]


def download_checkpoint(client: Any, run_id: str, dest: Path, artifact: str | None = None, key: str = "ckpt") -> Path:
    """Download the run's best checkpoint (or the given artifact path) into ``dest``; return the local file."""
    run_id = get_run(client, run_id, key).info.run_id  # a prefix becomes the full id
    if artifact is None:
        names = [info.path for info in client.list_artifacts(run_id, CHECKPOINT_DIR) if not info.is_dir]
        artifact = choose_checkpoint(names)
        if artifact is None:
            raise UserError(
                f"{key}={run_id}: the run has no {CHECKPOINT_DIR}/*.ckpt artifact (did it finish training?)"
            )
    dest.mkdir(parents=True, exist_ok=True)
    try:
        local = client.download_artifacts(run_id, artifact, str(dest))
    except Exception as err:  # MLflow raises several types for a missing artifact
        raise UserError(
            f"{key}=runs:/{run_id}/{artifact}: cannot download ({' '.join(str(err).split())[:200]})"
        ) from err
    return Path(local)


def download_config(client: Any, run_id: str, name: str = "config.yaml") -> Any:
    """The run's ``config.yaml`` artifact as a dict (or another YAML artifact: ``overrides.yaml``), None if absent."""
    run_id = resolve_run_id(client, run_id, "ckpt")
    try:
        text = client.download_artifacts(run_id, name)
    except Exception:  # no such artifact
        return None
    return yaml.safe_load(Path(text).read_text(encoding="utf-8"))
