"""``task=average``: average the weights of a run's last (or best) N epoch checkpoints into one checkpoint, and
test it in a new MLflow run that points at its source, as ``task=eval`` tests any checkpoint.

``ckpt`` names the training run (an MLflow run id, whose ``dlrun.output_dir`` holds its checkpoints) or its
folder (the run dir or its ``checkpoints/``). The run must have kept the epochs: train with
``checkpoint.save_top_k=-1`` (every epoch) for ``average.last=N``, or ``checkpoint.save_top_k>=N`` for
``average.best=N``. The source run and its files are only read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlrun.errors import ConfigError
from dlrun.tasks.checkpoints import CheckpointError, read_checkpoint, user_path

EPOCH_FILE = re.compile(r"epoch=?(\d+)")  # dlrun's epoch{NNN}.ckpt (Lightning's default: epoch=N-step=M.ckpt)
AVERAGED = "average.ckpt"


@dataclass
class Picked:
    """The epoch checkpoints to average, oldest first, and how they were chosen (``last 5``, ``best 5``)."""

    paths: list[Path]
    rule: str


def average(cfg: DictConfig) -> dict[str, float]:
    """Average the picked checkpoints' weights into ``checkpoints/average.ckpt``, test it, return its metrics."""
    from dlrun.tasks.checkpoints import resolve
    from dlrun.tasks.evaluate import evaluate_source
    from dlrun.tasks.job import current_job

    job = current_job(cfg)
    count, best = average_count(cfg)
    picked = pick_checkpoints(cfg, job.cwd, count, best)
    checkpoint = averaged_checkpoint([read_checkpoint(p) for p in picked.paths])
    checkpoint.setdefault("dlrun", {})["averaged"] = {"rule": picked.rule, "files": [p.name for p in picked.paths]}
    path = job.output_dir / "checkpoints" / AVERAGED
    from dlrun.callbacks.checkpointing import write_atomically

    write_atomically(checkpoint, path)
    # Read back like any checkpoint a user names; it carries the training run's id, config and name.
    source = resolve(str(path), cfg.tracking.uri, job.cwd, describe=cfg.tracking.enabled)
    print(f"averaged the {picked.rule} epoch checkpoints: {', '.join(p.name for p in picked.paths)}", flush=True)

    def record(run: Any) -> None:
        run.set_tags({"dlrun.averaged": f"{picked.rule}: {' '.join(p.name for p in picked.paths)}"})
        run.log_artifact(path, "checkpoints")

    return evaluate_source(cfg, job, source, f"avg{count}", record)


def average_count(cfg: DictConfig) -> tuple[int, bool]:
    """N, and whether the best N (``average.best``) rather than the last N (``average.last``) are averaged."""
    node = cfg.get("average") or {}
    last, best = node.get("last"), node.get("best")
    if (last is None) == (best is None):
        raise ConfigError("average: task=average needs one of average.last=N (the last N epochs) or average.best=N")
    key, count = ("average.best", best) if best is not None else ("average.last", last)
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise ConfigError(f"{key}: expected a whole number of checkpoints >= 2, got {count!r}")
    return count, best is not None


def pick_checkpoints(cfg: DictConfig, cwd: Path, count: int, best: bool) -> Picked:
    """The ``count`` last (by epoch) or best (by the run's monitor) epoch checkpoints of the run ``ckpt`` names."""
    ref = cfg.get("ckpt")
    if not ref:
        raise ConfigError("ckpt: task=average needs ckpt=RUN_ID or ckpt=RUN_DIR (a training run that kept its epochs)")
    folder = checkpoint_folder(str(ref), cfg.tracking.uri if cfg.tracking.enabled else None, cwd)
    epochs = sorted((epoch_of(p), p) for p in folder.glob("*.ckpt") if epoch_of(p) is not None)
    key = "average.best" if best else "average.last"
    if len(epochs) < count:
        raise ConfigError(
            f"{key}={count}: {folder} holds {len(epochs)} epoch checkpoint{'s' if len(epochs) != 1 else ''}; "
            "train with checkpoint.save_top_k=-1 to keep every epoch"
        )
    if not best:
        return Picked([p for _, p in epochs[-count:]], f"last {count}")
    scores, mode = ranking(epochs[-1][1])
    scored = [(scores[p.name], e, p) for e, p in epochs if p.name in scores]
    if len(scored) < count:
        raise ConfigError(f"{key}={count}: the run's checkpoint callback scored {len(scored)} of its epoch checkpoints")
    chosen = sorted(scored, key=lambda t: t[0], reverse=mode == "max")[:count]
    return Picked([p for _, _, p in sorted(chosen, key=lambda t: t[1])], f"best {count}")


def checkpoint_folder(ref: str, tracking_uri: str | None, cwd: Path) -> Path:
    """The local folder of the epoch checkpoints of the run ``ref`` names (its id, its folder or ``checkpoints/``)."""
    path = user_path(ref, cwd)
    if path.is_dir():
        return path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if path.is_file():
        raise CheckpointError(f"ckpt={ref}: task=average takes a run (id or folder), not one checkpoint file")
    from dlrun.tracking.artifacts import client_for, get_run, parse_run_ref

    if tracking_uri is None or parse_run_ref(ref) is None:
        raise CheckpointError(f"ckpt={ref}: no such folder, and not an MLflow run id (8+ hex digits of one)")
    client = client_for(tracking_uri, cwd)
    run = get_run(client, ref, "ckpt")
    output = run.data.tags.get("dlrun.output_dir")
    folder = Path(output) / "checkpoints" if output else None
    if folder is None or not folder.is_dir():
        raise CheckpointError(
            f"ckpt={ref}: the run's checkpoints folder ({folder}) is not on this machine; "
            "average on the machine that trained it, or name the folder"
        )
    return folder


def epoch_of(path: Path) -> int | None:
    """The epoch in an epoch checkpoint's file name (``epoch007.ckpt``: 7); None for ``last.ckpt`` and others."""
    match = EPOCH_FILE.match(path.stem)
    return int(match.group(1)) if match else None


def ranking(path: Path) -> tuple[dict[str, float], str]:
    """How the run's monitoring checkpoint callback ranked its kept epochs, as stored in ``path``: file name ->
    score, and ``max`` or ``min``."""
    callbacks = read_checkpoint(path).get("callbacks") or {}
    for key, state in callbacks.items():
        mode = re.search(r"'mode': '(min|max)'", str(key))
        if str(key).startswith("ModelCheckpoint") and mode and "'monitor': None" not in str(key):
            kept = state.get("best_k_models") or {}
            return {Path(str(name)).name: float(score) for name, score in kept.items()}, mode.group(1)
    raise ConfigError(f"average.best: {path} records no monitored metric to rank epochs by; use average.last")


def averaged_checkpoint(checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest of ``checkpoints`` (oldest first) with the element-wise mean of their weights.

    Floating-point tensors are averaged (in float64, then cast back); integer buffers (batch-norm counters)
    are the newest's. Optimizer and scheduler states are dropped: the mean is a model, not a training state.
    """
    states = [c["state_dict"] for c in checkpoints]
    keys = list(states[-1])
    for state in states[:-1]:
        if list(state) != keys:
            raise CheckpointError("average: the checkpoints hold different weights (not one run's epochs?)")
    merged = {key: mean_tensor([s[key] for s in states]) for key in keys}
    newest = {k: v for k, v in checkpoints[-1].items() if k not in ("optimizer_states", "lr_schedulers")}
    return {**newest, "state_dict": merged}


def mean_tensor(tensors: list[Any]) -> Any:
    """Element-wise mean of same-shaped tensors (floating point), else the last one."""
    import torch

    last = tensors[-1]
    if not torch.is_floating_point(last):
        return last
    return torch.stack([t.to(torch.float64) for t in tensors]).mean(dim=0).to(last.dtype)
