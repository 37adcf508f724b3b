"""Sampled continuations of fixed prompts, written after every validation epoch of a language model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl

Publish = Callable[[Path, str], None]


def format_continuations(pairs: list[tuple[str, str]], header: str = "") -> str:
    """One block per prompt: the prompt, then each sampled continuation indented."""
    blocks: dict[str, list[str]] = {}
    for prompt, text in pairs:
        blocks.setdefault(prompt, []).append(text)
    lines = [header] if header else []
    for prompt, texts in blocks.items():
        lines.append(f"prompt: {prompt!r}")
        lines.extend(f"  {text}" for text in texts)
    return "\n".join(lines) + "\n"


class LanguageModelSamples(pl.Callback):
    """After each validation epoch (not the sanity check), write ``samples/epoch_NNN.txt`` and publish it.

    The objective supplies the texts (``continuations(prompts, datamodule)``); the trainer's datamodule
    supplies the vocabulary. Only the global-zero process writes.
    """

    def __init__(self, out_dir: Path, publish: Publish | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.publish = publish

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        hp = pl_module.hparams
        pairs = pl_module.continuations(hp.prompts, trainer.datamodule)  # type: ignore[operator]
        header = f"epoch {trainer.current_epoch}, temperature {hp.temperature}, top_k {hp.top_k or 'all'}"
        path = self.out_dir / "samples" / f"epoch_{trainer.current_epoch:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(format_continuations(pairs, header), encoding="utf-8")
        if self.publish is not None:
            self.publish(path, "samples")
