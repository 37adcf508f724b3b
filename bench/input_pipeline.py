"""Input pipeline: MNIST training batches/s of dlrun's data module vs the usual per-sample Dataset + DataLoader.

    python bench/input_pipeline.py                          # full epochs (430 batches of 128), 3 repeats
    python bench/input_pipeline.py --batches 20 --repeats 1

dlrun: ``MNISTDataModule.train_dataloader()`` (images in memory, one index tensor per batch, sliced at
once) followed by ``on_after_batch_transfer``, as Lightning calls them, in both of its modes: for a GPU
(uint8 batches, normalized per batch on the device) and for CPU training (normalized once up front, so a
batch is one slice of float rows). Per-sample:
a Dataset over the same in-memory uint8 images whose ``__getitem__`` returns one normalized float tensor
``(1, 28, 28)`` and its label, batched by ``DataLoader(batch_size=128, shuffle=True)`` with 0 and with 2
workers. The clock starts once the first batch is out (worker start-up is not counted) and stops after
the last batch. Sides alternate within each repeat; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from common import data_dir, emit, machine, median, set_threads, size_args
from reference_loop import MEAN, STD

BATCH_SIZE = 128


class PerSample(Dataset):
    """The common approach: one example per ``__getitem__``, normalized there."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Normalized image ``(1, 28, 28)`` float and its label."""
        image = self.images[index].unsqueeze(0).float().div(255)
        return (image - MEAN) / STD, int(self.labels[index])


def batches_per_s(batches: Iterable[Any], limit: int, transform: Callable[[Any], Any] = lambda b: b) -> float:
    """Draw up to ``limit`` batches (0: all) and return batches/s after the first one."""
    count, start = 0, 0.0
    for batch in batches:
        transform(batch)
        count += 1
        if count == 1:
            start = time.perf_counter()
        if limit and count >= limit:
            break
    return (count - 1) / (time.perf_counter() - start)


def after_transfer(datamodule: Any) -> Callable[[Any], Any]:
    """What Lightning does to each batch once it is on the device (normalization, for uint8 batches)."""
    return lambda batch: datamodule.on_after_batch_transfer(batch, 0)


def main() -> None:
    """Alternate dlrun's pipeline and per-sample loaders (0 and 2 workers); print batches/s and speed-ups."""
    parser = size_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batches=0, repeats=3)
    args = parser.parse_args()
    set_threads(args.threads)
    import pytorch_lightning as pl

    from dlrun.data.mnist import MNISTDataModule

    datamodule = MNISTDataModule(str(data_dir()), batch_size=BATCH_SIZE)
    datamodule.setup("fit")
    train = datamodule.splits["train"]
    on_cpu = MNISTDataModule(str(data_dir()), batch_size=BATCH_SIZE)
    on_cpu.setup("fit")
    on_cpu.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    per_sample = PerSample(train.images, train.labels)
    limit = args.batches + 1 if args.batches else 0  # +1: the first batch only starts the clock

    sides: dict[str, Callable[[], float]] = {
        "dlrun": lambda: batches_per_s(datamodule.train_dataloader(), limit, after_transfer(datamodule)),
        "dlrun_cpu_training": lambda: batches_per_s(on_cpu.train_dataloader(), limit, after_transfer(on_cpu)),
        "per_sample_0_workers": lambda: batches_per_s(DataLoader(per_sample, BATCH_SIZE, shuffle=True), limit),
        "per_sample_2_workers": lambda: batches_per_s(
            DataLoader(per_sample, BATCH_SIZE, shuffle=True, num_workers=2), limit
        ),
    }
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name, side in sides.items():
            runs[name].append(side())
        line = "  ".join(f"{name} {values[-1]:.0f}" for name, values in runs.items())
        print(f"repeat {repeat + 1}: {line} batches/s", flush=True)
    result: dict[str, Any] = {"machine": machine(), "batch_size": BATCH_SIZE, "batches": args.batches or "epoch"}
    result["batches_per_s"] = {name: median(values) for name, values in runs.items()}
    for name in ("per_sample_0_workers", "per_sample_2_workers"):
        for ours in ("dlrun", "dlrun_cpu_training"):
            key = f"speedup_vs_{name}" if ours == "dlrun" else f"cpu_training_speedup_vs_{name}"
            result[key] = median([d / o for d, o in zip(runs[ours], runs[name], strict=True)])
    result["runs"] = runs
    result["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)


if __name__ == "__main__":
    main()
