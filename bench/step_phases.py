"""Where a training step's time goes: per-phase medians for dlrun, a bare Lightning Trainer and the hand loop.

    python bench/step_phases.py                       # MNIST MLP, full epochs, 3 alternating repeats
    python bench/step_phases.py --batches 20 --repeats 1

The profile evidence behind the training-overhead ratios. Each side trains the same MLP for one epoch with
``time.perf_counter()`` marks at the step's boundaries: Lightning's hooks (``on_train_batch_start``,
``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``, ``on_train_batch_end``) and
``training_step`` entry/exit for dlrun and bare Lightning; the hand loop (``reference_loop.py``) calls the
same points through its ``hook``.
The phases, per step (median over the epoch's steps, then over repeats):

- ``between steps``: end of one step to the start of the next (next batch, its transfer, loop bookkeeping);
- ``to forward``: from the batch's start to the network's forward (closure and optimizer wrappers);
- ``forward``, ``zero_grad`` (with the hooks around it), ``backward``, ``optimizer step``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from common import data_dir, emit, machine, median, set_threads, size_args
from reference_loop import BATCH_SIZE, epoch, shuffled, training_set
from train_overhead import dlrun_overrides, fit_bare_lightning

PHASES = {
    "batch_end>batch_start": "between steps",
    "batch_start>step_in": "to forward",
    "step_in>step_out": "forward",
    "step_out>before_backward": "zero_grad",
    "before_backward>after_backward": "backward",
    "after_backward>before_opt": "after backward",
    "before_opt>batch_end": "optimizer step",
}
marks: list[tuple[str, float]] = []


def mark(name: str, step: int | None = None) -> None:
    """Record that the step reached ``name`` now (also the reference loop's ``hook``)."""
    marks.append((name, time.perf_counter()))


def phase_medians() -> dict[str, float]:
    """Median milliseconds per phase over the marks recorded since the last call."""
    spans: dict[str, list[float]] = defaultdict(list)
    for (a, ta), (b, tb) in pairwise(marks):
        if f"{a}>{b}" in PHASES:
            spans[PHASES[f"{a}>{b}"]].append((tb - ta) * 1e3)
    marks.clear()
    return {phase: median(values) for phase, values in spans.items()}


def marker_callback() -> Any:
    """A Lightning callback that marks the step's hooks."""
    import pytorch_lightning as pl

    class Marks(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            mark("batch_start")

        def on_before_backward(self, *args: Any) -> None:
            mark("before_backward")

        def on_after_backward(self, *args: Any) -> None:
            mark("after_backward")

        def on_before_optimizer_step(self, *args: Any) -> None:
            mark("before_opt")

        def on_train_batch_end(self, *args: Any) -> None:
            mark("batch_end")

    return Marks()


def marked_training_step(step: Any) -> Any:
    """``training_step`` with marks at its entry and exit."""

    def training_step(self: Any, batch: Any, batch_idx: int) -> Any:
        mark("step_in")
        loss = step(self, batch, batch_idx)
        mark("step_out")
        return loss

    return training_step


def hand(images: torch.Tensor, labels: torch.Tensor, batches: int) -> dict[str, float]:
    """The hand loop (``reference_loop.epoch``), marked at the same points through its hook."""
    epoch("mlp", images, labels, batches, hook=mark)
    return phase_medians()


def lightning(images: torch.Tensor, labels: torch.Tensor, batches: int) -> dict[str, float]:
    """A bare Lightning Trainer around the hand loop's step."""
    order = shuffled(len(labels), limit=batches)
    fit_bare_lightning("mlp", images, labels, order, marker_callback(), marked_training_step)
    return phase_medians()


def dlrun_side(batches: int, workdir: Path, extra: list[str] = ()) -> dict[str, float]:
    """``dlrun.run`` of the MLP epoch, with the marker callback added to the trainer dlrun builds."""
    import dlrun
    import dlrun.tasks.train
    from dlrun.objectives.classification import ClassificationModule

    # The train task calls the build_trainer it imported into dlrun.tasks.train: patch that name.
    build_trainer, step = dlrun.tasks.train.build_trainer, ClassificationModule.training_step

    def with_marks(cfg: Any, job: Any, run: Any, callbacks: list[Any]) -> Any:
        return build_trainer(cfg, job, run, [marker_callback(), *callbacks])

    dlrun.tasks.train.build_trainer = with_marks
    ClassificationModule.training_step = marked_training_step(step)
    try:
        dlrun.run(dlrun_overrides("mlp", batches, 0, workdir, f"phases-{time.time_ns()}") + list(extra))
    finally:
        dlrun.tasks.train.build_trainer, ClassificationModule.training_step = build_trainer, step
    return phase_medians()


def main() -> None:
    """Alternate the three sides; print and save per-phase medians (ms)."""
    parser = size_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batches=0, repeats=3)
    parser.add_argument(
        "--overrides", default="", help="extra dlrun overrides, space-separated (e.g. data.on_device=true)"
    )
    args = parser.parse_args()
    set_threads(args.threads)
    os.environ.setdefault("DLRUN_DATA_DIR", str(data_dir()))
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    images, labels = training_set(data_dir() / "mnist")
    runs: dict[str, list[dict[str, float]]] = {"dlrun": [], "lightning": [], "hand": []}
    with tempfile.TemporaryDirectory(prefix="dlrun-bench-") as tmp:
        sides = {
            "dlrun": lambda: dlrun_side(args.batches, Path(tmp), args.overrides.split()),
            "lightning": lambda: lightning(images, labels, args.batches),
            "hand": lambda: hand(images, labels, args.batches),
        }
        if args.repeats > 1:
            for side in sides.values():
                side()
        for repeat in range(args.repeats):
            for name, side in sides.items():
                runs[name].append(side())
            print(f"repeat {repeat + 1}: " + "  ".join(f"{n} {sum(r[-1].values()):.2f} ms" for n, r in runs.items()))
    phases = list(dict.fromkeys(PHASES.values()))
    result: dict[str, Any] = {"machine": machine(), "batch_size": BATCH_SIZE, "batches": args.batches or "epoch"}
    result["phases_ms"] = {
        name: {p: median([r.get(p, 0.0) for r in reps]) for p in phases} for name, reps in runs.items()
    }
    for per_phase in result["phases_ms"].values():
        per_phase["step"] = sum(per_phase.values())
    result["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)


if __name__ == "__main__":
    main()
