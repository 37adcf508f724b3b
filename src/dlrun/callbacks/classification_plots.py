"""After testing a classifier: a confusion matrix and a grid of misclassified test images, as PNGs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from dlrun.callbacks.figures import save_figure

Publish = Callable[[Path, str], None]


def plot_confusion(matrix: Any, path: Path, title: str = "") -> Path:
    """Save ``matrix`` (true class x predicted class counts) as an annotated heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix)
    n = counts.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    # Row-normalized colours, so rare classes' errors are as visible as frequent ones'.
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = counts.trace() / max(counts.sum(), 1)
    ax.set_title(f"{title + ': ' if title else ''}accuracy {accuracy:.4f} of {counts.sum()}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def plot_misclassified(images: Any, predicted: list[int], true: list[int], path: Path, columns: int = 8) -> Path:
    """Save a grid of images ``(n, H, W)`` or ``(n, 1, H, W)`` labelled ``pred P / true T``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(predicted)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k].reshape(images[k].shape[-2:]), cmap="gray")
            ax.set_title(f"pred {predicted[k]} / true {true[k]}", fontsize=7)
    if n == 0:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    return save_figure(fig, path)


class ClassificationPlots(pl.Callback):
    """After test: ``plots/confusion_matrix.png`` and ``plots/misclassified.png`` (first ``max_images`` errors).

    Reads the logits that ``test_step`` returns (recomputes them if it returns none); hands each file to
    ``publish(path, artifact_dir)``.
    """

    def __init__(self, out_dir: Path, publish: Publish | None = None, max_images: int = 32) -> None:
        self.out_dir = Path(out_dir)
        self.publish = publish
        self.max_images = max_images
        self._confusion: torch.Tensor | None = None
        self._wrong: list[tuple[torch.Tensor, int, int]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._confusion, self._wrong = None, []

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        x, y = batch
        logits = outputs if isinstance(outputs, torch.Tensor) else pl_module(x)
        predicted = logits.argmax(dim=-1)
        n = logits.size(-1)
        counts = torch.bincount(y * n + predicted, minlength=n * n).reshape(n, n).cpu()
        self._confusion = counts if self._confusion is None else self._confusion + counts
        if len(self._wrong) < self.max_images and x.dim() >= 3:  # images (batch, [channels,] height, width) only
            for row in (predicted != y).nonzero().flatten()[: self.max_images - len(self._wrong)].tolist():
                self._wrong.append((x[row].float().cpu(), int(predicted[row]), int(y[row])))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._confusion is None or not trainer.is_global_zero:
            return
        plots = self.out_dir / "plots"
        self._publish(plot_confusion(self._confusion.numpy(), plots / "confusion_matrix.png", "test"))
        if not self._wrong:
            return  # no errors, or inputs that are not images
        images = torch.stack([w[0] for w in self._wrong]).numpy()
        predicted, true = [w[1] for w in self._wrong], [w[2] for w in self._wrong]
        self._publish(plot_misclassified(images, predicted, true, plots / "misclassified.png"))

    def _publish(self, path: Path) -> None:
        if self.publish is not None:
            self.publish(path, "plots")
