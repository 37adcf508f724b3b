"""``task=predict``: use a trained checkpoint on new inputs.

Classifiers write a CSV (``index,label,probability``; plus ``file`` for ``input=DIR`` of PNGs) for the
``split`` (default test) or the images, to ``output`` (default ``predictions.csv`` in the run dir), logged
as an artifact. Translation models translate the lines of ``input=FILE`` (or stdin) to stdout (or
``output``), with the vocabulary stored in the checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import torch
from omegaconf import DictConfig

from dlrun.contracts import DataView, ObjectiveView
from dlrun.data.errors import DataError


def predict(cfg: DictConfig) -> list[dict[str, Any]] | list[str]:
    """Restore the source config and weights; write predictions (rows) or translations (lines) and return them."""
    from dlrun.config.restore import restore_config
    from dlrun.tasks.checkpoints import load_source
    from dlrun.tasks.checks import check_config, recorded_config
    from dlrun.tasks.job import current_job, run_spec, source_run_spec
    from dlrun.tasks.parts import load_trained
    from dlrun.tracking.run import tracked_run

    stdout = sys.stdout
    job = current_job(cfg)
    # Translations may go to stdout for a pipe: everything else dlrun prints goes to stderr meanwhile.
    with contextlib.redirect_stdout(sys.stderr):
        source = load_source(cfg, job)
        cfg = restore_config(cfg, source.config, job.overrides)
        check_config(cfg)
        config = recorded_config(cfg)
        with tracked_run(source_run_spec(run_spec(cfg, job), source, "predict", cfg)) as run:
            run.log_config(config, job.overrides)
            parts = load_trained(cfg, source.checkpoint, source.path)
            datamodule, module = parts.datamodule, parts.module
            module.eval().to(_device(cfg))
            if parts.objective.predicts_lines:
                lines = predict_lines(cfg, datamodule, module, stdout, job.output_dir)
                path = Path(cfg.output) if cfg.output else job.output_dir / "predictions.txt"
                run.log_artifact(path, "predictions")
                return lines
            rows = classify(cfg, parts.data, parts.objective)
            path = Path(cfg.output) if cfg.output else job.output_dir / "predictions.csv"
            write_csv(rows, path)
            run.log_artifact(path, "predictions")
            print(f"wrote {len(rows)} predictions to {path}", file=stdout, flush=True)
            return rows


def _device(cfg: DictConfig) -> torch.device:
    """The GPU when the trainer config asks for one and there is one; the CPU otherwise."""
    wants_gpu = str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def _image_batches(cfg: DictConfig, data: Any) -> Iterator[tuple[list[Any], Any]]:
    """(row keys, raw batch) pairs: ``(index, file)`` for a PNG folder, ``(index,)`` for a split."""
    from dlrun.data.images import read_image_folder

    size = int(cfg.data.get("eval_batch_size") or cfg.data.get("batch_size") or 256)
    if cfg.input:
        dims = data.sizes()
        if "input_shape" not in dims:
            raise DataError(f"input={cfg.input}: {data.state_key} gives no input_shape in dims for image files")
        names, images = read_image_folder(cfg.input, size=dims["input_shape"][-2:])
        for start in range(0, len(names), size):
            chunk = images[start : start + size]
            keys = [(start + k, names[start + k]) for k in range(len(chunk))]
            yield keys, (chunk, torch.zeros(len(chunk), dtype=torch.long))
        return
    split = cfg.split
    if split not in ("test", "val", "train"):
        raise DataError(f"split: {split!r} is not one of test, val, train")
    datamodule = data.module
    datamodule.prepare_data()
    datamodule.setup("predict" if split == "test" else "fit")
    start = 0
    for batch in getattr(datamodule, f"{split}_dataloader")():
        keys = [(start + k,) for k in range(len(batch[1]))]
        start += len(keys)
        yield keys, batch


@torch.no_grad()
def classify(cfg: DictConfig, data: DataView, objective: ObjectiveView) -> list[dict[str, Any]]:
    """Predicted label and its probability for every image of the split or the input folder.

    Each batch, as its data module hands it over, gives class probabilities ``(batch, classes)``
    (``dlrun.contracts.ObjectiveView.class_probabilities``: the objective's ``predict_step``, or a plain
    module's ``forward``).
    """
    rows: list[dict[str, Any]] = []
    device = objective.module.device
    for keys, raw in _image_batches(cfg, data):
        batch = data.module.on_after_batch_transfer(tuple(t.to(device) for t in raw), 0)
        probability, label = objective.class_probabilities(batch).max(dim=-1)
        for key, p, y in zip(keys, probability.tolist(), label.tolist(), strict=True):
            row = {"index": key[0], "label": y, "probability": round(p, 6)}
            if len(key) > 1:
                row = {"index": key[0], "file": key[1], "label": y, "probability": round(p, 6)}
            rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write rows (dicts with the same keys) as CSV with a header line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["index", "label", "probability"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_lines(source: str | None) -> list[str]:
    """Lines of the file ``source``, or of stdin for None or ``-``."""
    if source in (None, "-"):
        return sys.stdin.read().splitlines()
    path = Path(source)
    if not path.is_file():
        raise DataError(f"input={source}: no such file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"input={source}: not UTF-8 text ({err.reason} at byte {err.start})") from err


@torch.no_grad()
def predict_lines(cfg: DictConfig, datamodule: Any, module: Any, stdout: TextIO, out_dir: Path) -> list[str]:
    """One output line per input line (translations, continuations) via the objective's ``predict_lines``.

    Written to ``cfg.output``, or to ``stdout`` with a copy in the run dir.
    """
    outputs = module.predict_lines(read_lines(cfg.input), datamodule)
    text = "".join(line + "\n" for line in outputs)
    target = Path(cfg.output) if cfg.output else out_dir / "predictions.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    if not cfg.output:
        stdout.write(text)
        stdout.flush()
    return list(outputs)
