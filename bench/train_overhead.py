"""Training overhead: one MNIST epoch trained by ``dlrun`` vs by a minimal hand-written PyTorch loop.

    python bench/train_overhead.py                         # MLP (9 repeats) and CNN (3), full epochs, alternating
    python bench/train_overhead.py --models mlp --batches 50 --repeats 1

Both sides: same network (MLP 784-512-512-10 dropout 0.2, or the example CNN), batch size 128, Adam 1e-3,
same process and thread count, 55,000 training images. dlrun runs through ``dlrun.run([...])`` (Hydra
config, Lightning Trainer with dlrun's callbacks, MLflow run in a scratch SQLite store) and its samples/s
is the ``train/samples_per_s`` it logged to MLflow. The hand loop (``reference_loop.py``) indexes in-memory
float tensors and is timed the way dlrun's ``Throughput`` callback times an epoch: from the start of the
first step to the end of the last one. A third side, a bare Lightning ``Trainer`` (no logger, checkpoints,
progress bar or dlrun code) on the same in-memory tensors, timed the same way, separates what Lightning
itself costs from what dlrun adds. Sides alternate (dlrun, Lightning, hand, dlrun, ...) after one untimed
warm-up of each (skipped for a single repeat).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from common import data_dir, emit, machine, median, set_threads, size_args
from reference_loop import BATCH_SIZE, epoch, mnist_loss, mnist_network, shuffled, training_set


class Batches(IterableDataset):
    """The hand loop's batches, indexed as they are drawn (as the hand loop does inside its timing)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, order: list[torch.Tensor]) -> None:
        self.images, self.labels, self.order = images, labels, order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return ((self.images[index], self.labels[index]) for index in self.order)

    def __len__(self) -> int:
        return len(self.order)


def fit_bare_lightning(
    model_name: str, images: torch.Tensor, labels: torch.Tensor, order: list[torch.Tensor], callback: Any,
    wrap_step: Callable[[Any], Any] = lambda step: step,
) -> None:  # fmt: skip
    """One epoch of the hand loop's step in a bare Lightning Trainer (no logger, checkpoints, bar) plus ``callback``."""
    import pytorch_lightning as pl

    def training_step(self: Any, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return mnist_loss(self.net, batch)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mnist_network(model_name)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    Module.training_step = wrap_step(training_step)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback], num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(Module(), train_dataloaders=DataLoader(Batches(images, labels, order), batch_size=None))


def lightning_epoch(model_name: str, images: torch.Tensor, labels: torch.Tensor, batches: int, seed: int) -> float:
    """Samples/s of one epoch in a bare Lightning Trainer: the hand loop's step inside Lightning's loop."""
    import pytorch_lightning as pl

    class Clock(pl.Callback):
        start: float | None = None
        end = 0.0

        def on_train_batch_start(self, *args: Any) -> None:
            self.start = self.start or time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            self.end = time.perf_counter()

    torch.manual_seed(seed)
    order = shuffled(len(labels), limit=batches)
    clock = Clock()
    fit_bare_lightning(model_name, images, labels, order, clock)
    return sum(len(index) for index in order) / (clock.end - clock.start)


def dlrun_overrides(model_name: str, batches: int, seed: int, workdir: Path, name: str) -> list[str]:
    """The ``dlrun`` arguments of one benchmark epoch, tracked in a scratch SQLite store under ``workdir``."""
    overrides = [
        f"model={model_name}",
        "data=mnist",
        "data.batch_size=128",
        "optimizer=adam",
        "optimizer.lr=1e-3",
        "scheduler=none",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "callbacks.plots=false",
        "tracking.log_model=false",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        f"tracking.run_name={name}",
        f"seed={seed}",
        f"hydra.run.dir={workdir / name}",
    ]
    return overrides + ([f"trainer.limit_train_batches={batches}"] if batches else [])


def dlrun_epoch(model_name: str, batches: int, seed: int, *, workdir: Path) -> float:
    """Samples/s that a one-epoch ``dlrun`` training logged as ``train/samples_per_s``."""
    from mlflow.tracking import MlflowClient

    import dlrun

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    name = f"bench-{model_name}-{time.time_ns()}"
    overrides = dlrun_overrides(model_name, batches, seed, workdir, name)
    dlrun.run(overrides)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mnist")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return run.data.metrics["train/samples_per_s"]


def main() -> None:
    """Alternate dlrun and hand-written epochs per model; print samples/s medians and the ratio."""
    parser = size_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batches=0, repeats=0)
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.set_defaults(repeats=None)  # per model: 9 for the MLP (~5 s an epoch), 3 for the CNN (~80 s)
    args = parser.parse_args()
    set_threads(args.threads)
    os.environ.setdefault("DLRUN_DATA_DIR", str(data_dir()))
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    images, labels = training_set(data_dir() / "mnist")

    batches = args.batches or "epoch"
    results: dict[str, Any] = {"machine": machine(), "batch_size": BATCH_SIZE, "batches": batches, "models": {}}
    with tempfile.TemporaryDirectory(prefix="dlrun-bench-") as tmp:
        workdir = Path(tmp)
        for model_name in args.models.split(","):
            repeats = args.repeats or {"mlp": 9, "cnn": 3}[model_name]
            sides: dict[str, Callable[[int, int], float]] = {
                "dlrun": functools.partial(dlrun_epoch, model_name, workdir=workdir),
                "lightning": functools.partial(lightning_epoch, model_name, images, labels),
                "hand": functools.partial(epoch, model_name, images, labels),
            }
            if repeats > 1:  # untimed warm-up of every side
                for side in sides.values():
                    side(min(args.batches or 20, 20), 0)
            runs: dict[str, list[float]] = {name: [] for name in sides}
            for repeat in range(repeats):
                for name, side in sides.items():
                    runs[name].append(side(args.batches, repeat))
                line = "  ".join(f"{name} {values[-1]:.0f}" for name, values in runs.items())
                print(f"{model_name} repeat {repeat + 1}: {line} samples/s", flush=True)
            results["models"][model_name] = {
                **{f"{name}_samples_per_s": median(values) for name, values in runs.items()},
                "ratio": median([d / h for d, h in zip(runs["dlrun"], runs["hand"], strict=True)]),
                "lightning_vs_hand": median([lt / h for lt, h in zip(runs["lightning"], runs["hand"], strict=True)]),
                "dlrun_vs_lightning": median([d / lt for d, lt in zip(runs["dlrun"], runs["lightning"], strict=True)]),
                "runs": runs,
            }
    results["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    emit(results, args.json)


if __name__ == "__main__":
    main()
