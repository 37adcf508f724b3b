"""Attention heatmaps and source/reference/hypothesis samples for a fixed handful of validation sentences."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from dlrun.callbacks.figures import save_figure

Publish = Callable[[Path, str], None]


def plot_attention(attention: Any, source: list[str], hypothesis: list[str], path: Path, title: str = "") -> Path:
    """Save a heatmap of ``attention`` (hypothesis_len, source_len) with tokens on the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    weights = np.asarray(attention, dtype=float)[: len(hypothesis), : len(source)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(source) + 1.5), max(3.0, 0.3 * len(hypothesis) + 1.2)))
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), source, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(hypothesis)), hypothesis, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("generated")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return save_figure(fig, path)


def format_samples(samples: list[dict[str, Any]]) -> str:
    """Plain-text block of id / source / reference / hypothesis per sample."""
    blocks = []
    for sample in samples:
        blocks.append(
            f"id {sample['id']}\n"
            f"  source:     {' '.join(sample['source_tokens'])}\n"
            f"  reference:  {sample['reference']}\n"
            f"  hypothesis: {sample['hypothesis']}\n"
        )
    return "\n".join(blocks)


class TranslationSamples(pl.Callback):
    """After each validation epoch, write ``plots/epoch_NNN/attention_K.png`` and ``samples/epoch_NNN.txt``.

    Reads ``pl_module.samples`` (dicts with ``id``, ``source_tokens``, ``hypothesis_tokens``, ``attention``,
    ``hypothesis``, ``reference``) and hands every file to ``publish(path, artifact_dir)``.
    """

    def __init__(self, out_dir: Path, publish: Publish | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.publish = publish

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = getattr(pl_module, "samples", None)
        if trainer.sanity_checking or not trainer.is_global_zero or not samples:
            return
        epoch = f"epoch_{trainer.current_epoch:03d}"
        text_path = self.out_dir / "samples" / f"{epoch}.txt"
        text_path.parent.mkdir(parents=True, exist_ok=True)
        text_path.write_text(format_samples(samples), encoding="utf-8")
        self._publish(text_path, "samples")
        for k, sample in enumerate(samples):
            png = plot_attention(
                sample["attention"],
                sample["source_tokens"],
                sample["hypothesis_tokens"],
                self.out_dir / "plots" / epoch / f"attention_{k}.png",
                title=f"{epoch}, val id {sample['id']}",
            )
            self._publish(png, f"plots/{epoch}")

    def _publish(self, path: Path, artifact_dir: str) -> None:
        if self.publish is not None:
            self.publish(path, artifact_dir)


class BleuSignatureTag(pl.Callback):
    """After testing or validating, tag the run with sacrebleu's signature of the BLEU it logged."""

    def __init__(self, set_tags: Callable[[dict[str, str]], None]) -> None:
        self.set_tags = set_tags

    def _tag(self, pl_module: pl.LightningModule) -> None:
        signature = getattr(pl_module, "bleu_signature", None)
        if signature:
            self.set_tags({"dlrun.bleu_signature": signature})

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tag(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._tag(pl_module)
