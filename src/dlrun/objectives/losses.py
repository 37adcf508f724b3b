"""Losses for sequence models."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def masked_cross_entropy(
    logits: Tensor, target: Tensor, pad_index: int, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Summed token cross-entropy of logits (batch, T, V) against target (batch, T).

    Returns (loss_sum, n_tokens), both 0-dim tensors: padded target positions add zero
    loss and are not counted, so loss_sum / n_tokens is the mean over real tokens.
    Summing (instead of averaging per batch) lets callers average over a whole split.
    """
    if logits.dim() != 3 or logits.shape[:2] != target.shape:
        raise ValueError(
            f"logits: expected shape (batch, T, V) matching target {tuple(target.shape)}, got {tuple(logits.shape)}"
        )
    # float32 keeps the log-softmax accurate under mixed precision.
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        target.reshape(-1),
        ignore_index=pad_index,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    n_tokens = (target != pad_index).sum()
    return loss_sum, n_tokens
