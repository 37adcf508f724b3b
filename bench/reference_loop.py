"""The hand-written reference: plain PyTorch MNIST training, no dlrun code. Every benchmark's "hand loop" is this one.

    python bench/reference_loop.py [--model mlp|cnn] [--batches N] [--threads 1] [--data DIR]

Reads the IDX .gz files itself, keeps 55,000 normalized training images in memory (as many as dlrun trains
on), shuffles them each epoch, batch size 128, Adam 1e-3. Timed like dlrun's ``train/samples_per_s``: from
the start of the first training step (its batch drawn) to the end of the last one. Run as a script it trains
one epoch and prints ``samples_per_s <value>`` (``bench/cli_epoch.py`` runs it in its own process);
imported, :func:`train` is the loop the in-process benchmarks time, with an optional ``hook`` called at the
step's boundaries (phase marks, GPU synchronization) and the options the GPU benchmark needs (device data,
``torch.autocast``, another network and loss, gradient clipping).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common import data_dir

MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics (of [0, 1] pixels)
BATCH_SIZE = 128
TRAIN_SIZE = 55_000  # dlrun keeps 5,000 of the 60,000 training images for validation
# Where the loop calls ``hook(point, step)``, in order; step_phases.py turns the gaps between them into phases.
POINTS = ("batch_start", "step_in", "step_out", "before_backward", "after_backward", "before_opt", "batch_end")

Hook = Callable[[str, int], None]


def read_mnist(folder: Path, prefix: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The raw IDX files: uint8 images ``(n, 28, 28)``, int64 labels ``(n,)``."""
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz") as handle:
        images = torch.frombuffer(bytearray(handle.read()[16:]), dtype=torch.uint8).view(-1, 28, 28)
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz") as handle:
        labels = torch.frombuffer(bytearray(handle.read()[8:]), dtype=torch.uint8).long()
    return images, labels


def training_set(folder: Path, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """55,000 training images (a fixed subset) normalized once on ``device``, ``(n, 1, 28, 28)``, and labels."""
    images, labels = read_mnist(folder)
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:TRAIN_SIZE]
    pixels = images[keep].to(device).unsqueeze(1).float().div_(255).sub_(MEAN).div_(STD)
    return pixels, labels[keep].to(device)


def shuffled(
    count: int, batch_size: int = BATCH_SIZE, limit: int = 0, device: torch.device | str | None = None
) -> Sequence[torch.Tensor]:
    """One epoch of index batches over ``count`` examples in a fresh random order; the first ``limit`` (0: all)."""
    order = torch.randperm(count, device=device).split(batch_size)
    return order[:limit] if limit else order


def mnist_network(name: str) -> nn.Module:
    """The MLP (784-512-512-10, dropout 0.2) or the Keras/PyTorch-example CNN, written out by hand."""
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(512, 10),
        )  # fmt: skip
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
        )  # fmt: skip
    raise ValueError(f"model: expected mlp or cnn, got {name!r}")


def mnist_loss(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of a batch ``(images, labels)``."""
    x, y = batch
    return F.cross_entropy(net(x), y)


def _no_hook(point: str, step: int) -> None:
    pass


def train(
    net: nn.Module,
    items: Iterable[Any],
    fetch: Callable[[Any], Any] | None = None,
    loss: Callable[[nn.Module, Any], torch.Tensor] = mnist_loss,
    *,
    lr: float = 1e-3,
    clip_norm: float | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    hook: Hook | None = None,
) -> float:
    """Train ``net`` with Adam, one step per item; return the seconds from the first step's start to the last's end.

    A step draws its batch with ``fetch(item)`` (e.g. index tensor -> ``(images[i], labels[i])``; default: the
    item is the batch), computes ``loss(net, batch)`` (inside ``autocast()`` if given), zeroes the gradients,
    backpropagates, clips the gradients' norm to ``clip_norm`` if given and takes an optimizer step. The clock
    starts once the first batch is drawn, as dlrun's ``Throughput`` starts at Lightning's first
    ``on_train_batch_start``. ``hook(point, step)`` is called at each of :data:`POINTS`.
    """
    hook = hook or _no_hook
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    start = None
    for step, item in enumerate(items):
        hook("batch_start", step)
        batch = fetch(item) if fetch is not None else item
        hook("step_in", step)
        if start is None:
            start = time.perf_counter()
        with autocast() if autocast is not None else contextlib.nullcontext():
            value = loss(net, batch)
        hook("step_out", step)
        optimizer.zero_grad()
        hook("before_backward", step)
        value.backward()
        hook("after_backward", step)
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
        hook("before_opt", step)
        optimizer.step()
        hook("batch_end", step)
    if start is None:
        raise ValueError("train: no steps")
    return time.perf_counter() - start


def epoch(
    model: str, images: torch.Tensor, labels: torch.Tensor, batches: int = 0, seed: int | None = None,
    hook: Hook | None = None,
) -> float:  # fmt: skip
    """Samples/s of one epoch (its first ``batches``; 0: all) of a fresh ``model`` over in-memory tensors."""
    if seed is not None:
        torch.manual_seed(seed)
    net = mnist_network(model)
    order = shuffled(len(labels), limit=batches)
    seconds = train(net, order, lambda index: (images[index], labels[index]), hook=hook)
    return sum(len(index) for index in order) / seconds


def main() -> None:
    """Train one epoch and print ``samples_per_s <value>``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--batches", type=int, default=0, help="stop after this many batches (0: the full epoch)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    parser.add_argument("--data", type=Path, default=None, help="folder holding mnist/ (default: as bench/common.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = training_set((args.data or data_dir()) / "mnist")
    print(f"samples_per_s {epoch(args.model, images, labels, args.batches):.1f}", flush=True)


if __name__ == "__main__":
    main()
