"""An independent, minimal hand-written PyTorch loop: one MNIST epoch, printed as samples/s.

    python bench/hand_mnist.py [--model mlp|cnn] [--batches N] [--threads 1] [--data DIR]

No dlrun code: reads the IDX .gz files itself, keeps 55,000 normalized training images in memory (as
many as dlrun trains on), shuffles them each epoch, batch size 128, Adam 1e-3. Timed like dlrun's
``train/samples_per_s``: from the start of the first training step to the end of the last one.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def read(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized training images ``(55000, 1, 28, 28)`` and labels."""
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as handle:
        images = torch.frombuffer(bytearray(handle.read()[16:]), dtype=torch.uint8).view(-1, 1, 28, 28)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz") as handle:
        labels = torch.frombuffer(bytearray(handle.read()[8:]), dtype=torch.uint8).long()
    keep = torch.randperm(len(labels))[:55_000]
    return (images[keep].float() / 255 - 0.1307) / 0.3081, labels[keep]


def model(name: str) -> nn.Module:
    """MLP 784-512-512-10 with dropout 0.2, or the PyTorch-example CNN."""
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 10),
        )  # fmt: skip
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )  # fmt: skip


def main() -> None:
    """Train one epoch and print ``samples_per_s <value>``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--batches", type=int, default=0, help="stop after this many batches (0: the full epoch)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("DLRUN_DATA_DIR", "data")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images, labels = read(args.data / "mnist")
    net = model(args.model)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    batches = torch.randperm(len(labels)).split(128)
    if args.batches:
        batches = batches[: args.batches]
    samples, start = 0, None
    for index in batches:
        x, y = images[index], labels[index]
        start = start or time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        samples += len(y)
    print(f"samples_per_s {samples / (time.perf_counter() - start):.1f}", flush=True)


if __name__ == "__main__":
    main()
