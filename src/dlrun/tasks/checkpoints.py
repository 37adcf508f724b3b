"""Find a trained model from what a user names: a checkpoint file, an MLflow run id, or ``runs:/RUN_ID``."""

from __future__ import annotations

import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import UserError, one_line


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

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for files that are not checkpoints (a text file: KeyError)
        raise CheckpointError(f"{key}={path}: {describe_unreadable(path, err)}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{key}={path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def user_path(ref: str, cwd: Path) -> Path:
    """A path as the user typed it (``ckpt=``, ``resume=``): ``~`` expanded, relative to the job's working directory."""
    path = Path(ref).expanduser()
    return path if path.is_absolute() else cwd / path


def embedded_config(checkpoint: dict[str, Any], where: str) -> dict[str, Any]:
    """The dlrun config a checkpoint carries; ``where`` (``ckpt=PATH``) names it in the error when it has none."""
    config = (checkpoint.get("dlrun") or {}).get("config")
    if config is None:
        raise CheckpointError(f"{where}: the checkpoint holds no dlrun config (checkpoint['dlrun']['config'])")
    return config


def resolve(
    ref: str,
    tracking_uri: str | None,
    cwd: Path,
    download_dir: Path | None = None,
    key: str = "ckpt",
    describe: bool = True,
) -> Source:
    """Turn ``ckpt=...`` into a local checkpoint plus the config of the run that wrote it.

    A path wins over a run id of the same spelling; run ids are looked up in ``tracking_uri``. With
    ``describe``, a path's source run is looked up too (for its name), when the store knows it.
    """
    from dlrun.tracking.artifacts import client_for, download_checkpoint, download_config, parse_run_ref
    from dlrun.tracking.run_ids import resolve_run_id

    ref = str(ref)
    path = user_path(ref, cwd)
    run_ref = None if path.exists() else parse_run_ref(ref)
    if run_ref is None:
        if path.is_dir():
            raise CheckpointError(f"{key}={ref}: is a folder; name a .ckpt file inside it, or an MLflow run id")
        if not path.is_file():
            raise CheckpointError(
                f"{key}={ref}: no such checkpoint file, and not an MLflow run id (8+ hex digits of one) or runs:/RUN_ID"
            )
        checkpoint = read_checkpoint(path, key)
        config = embedded_config(checkpoint, f"{key}={ref}")
        source = Source(path, checkpoint, config, (checkpoint.get("dlrun") or {}).get("run_id"))
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


# -- why a file could not be read as a checkpoint ------------------------------------------------------
# torch.load's own messages run to several lines of advice about weights_only (even for a file that is no
# checkpoint at all) and carry ANSI escapes; cut to a length they end mid-word. Here the file's own bytes
# say what it is: empty, text, random bytes, a zip without its end (truncated), a pickle, or a real
# checkpoint holding objects that are not plain data.

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL = 0x80  # first byte of a pickle of protocol 2 or later (old-style torch.save files too)


def describe_unreadable(path: Path, err: BaseException) -> str:
    """The fault of a file ``torch.load(path, weights_only=True)`` refused with ``err``: one short clause.

    The caller puts the key and path in front: ``ckpt=PATH: <this>``.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(64)
    except OSError as os_err:
        return f"cannot read the file ({os_err.strerror or type(os_err).__name__})"
    if size == 0:
        return "empty file (0 bytes), not a checkpoint"
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return (
                f"truncated or damaged checkpoint ({_bytes(size)}; the end of the zip archive is missing: "
                "was it still being written or copied?)"
            )
        blocked = unsupported_global(err)
        if blocked:
            return (
                f"holds Python objects, not only tensors and plain data ({blocked}); "
                "dlrun loads checkpoints with weights_only=True"
            )
        return f"damaged checkpoint ({_bytes(size)}; {_first_sentence(err)})"
    if head[0] == PICKLE_PROTOCOL:
        blocked = unsupported_global(err)
        if blocked:
            return (
                f"a pickle holding Python objects ({blocked}), not a checkpoint of plain data; "
                "dlrun loads checkpoints with weights_only=True"
            )
        if isinstance(err, EOFError) or "truncated" in str(err).lower() or "ran out of input" in str(err).lower():
            return f"truncated pickle file ({_bytes(size)}), not a whole checkpoint"
        return f"not a checkpoint ({_bytes(size)} of pickle data that torch.load cannot read)"
    if _looks_like_text(head):
        return f"not a checkpoint (a text file, {_bytes(size)})"
    return f"not a checkpoint ({_bytes(size)} of neither a zip archive nor a pickle: random or foreign bytes)"


def unsupported_global(err: BaseException) -> str | None:
    """``torch.nn.modules.linear.Linear`` from torch's 'Unsupported global: GLOBAL ...' refusal, if that was it."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    return match.group(1) if match else None


def _first_sentence(err: BaseException) -> str:
    text = one_line(str(err)) or type(err).__name__
    return text.split(". ")[0].rstrip(".")[:200]


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _bytes(size: int) -> str:
    return f"{size} byte{'s' if size != 1 else ''}"
