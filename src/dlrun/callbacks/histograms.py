"""Per-epoch histograms of weights and of layer outputs (on a fixed validation batch), as PNGs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from dlrun.models.inspection import activations

Publish = Callable[[Path, str], None]


def plot_histograms(values: dict[str, torch.Tensor], path: Path, title: str, columns: int = 4, bins: int = 60) -> Path:
    """One small histogram per named tensor, in a grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(values)
    rows = max(1, -(-len(names) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        data = values[name].detach().float().flatten().cpu().numpy()
        ax.axis("on")
        ax.hist(data, bins=bins, color="tab:blue")
        ax.set_title(f"{name}\nmean {data.mean():.3g} std {data.std():.3g}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every floating tensor inside a layer output (tuples of RNN outputs, per-step lists)."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


class Histograms(pl.Callback):
    """After each validation epoch: ``plots/histograms/weights_epoch_NNN.png`` and ``activations_epoch_NNN.png``.

    Weights: every parameter with more than one dimension (biases and norms add little). Activations: the
    outputs of every leaf layer that has parameters, for the first validation batch.
    """

    def __init__(
        self,
        out_dir: Path,
        example_input: Callable[[Any], Any],
        publish: Publish | None = None,
        max_panels: int = 24,
        max_examples: int = 256,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.publish = publish
        self.max_panels = max_panels
        self.max_examples = max_examples
        self._batch: Any = None
        self.example_input = example_input

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and self._batch is None:
            # A few hundred examples give smooth histograms; a whole 1000-image batch of conv maps costs 100s of MB.
            if isinstance(batch, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in batch):
                batch = type(batch)(t[: self.max_examples] for t in batch)
            self._batch = batch

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._batch is None:
            return
        epoch = f"epoch_{trainer.current_epoch:03d}"
        folder = self.out_dir / "plots" / "histograms"
        weights = {n: p for n, p in pl_module.named_parameters() if p.dim() > 1}
        self._publish(
            plot_histograms(
                dict(list(weights.items())[: self.max_panels]), folder / f"weights_{epoch}.png", f"weights, {epoch}"
            )
        )
        layers = [
            n
            for n, m in pl_module.named_modules()
            if n and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
        ]
        outputs = activations(pl_module, self.example_input(self._batch), layers[: self.max_panels])
        flat = {n: torch.cat([t.flatten().float() for t in _tensors(v)]) for n, v in outputs.items() if _tensors(v)}
        self._publish(plot_histograms(flat, folder / f"activations_{epoch}.png", f"layer outputs, {epoch}"))

    def _publish(self, path: Path) -> None:
        if self.publish is not None:
            self.publish(path, "plots/histograms")
