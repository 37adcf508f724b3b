"""Attention mechanisms: additive (Bahdanau) and multiplicative (Luong dot / general)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


def _check_inputs(query: Tensor, keys: Tensor, mask: Tensor) -> None:
    """Raise ValueError unless query, keys and mask agree on batch size and source length."""
    if query.dim() != 3:
        raise ValueError(f"query: expected (batch, T, query_size), got shape {tuple(query.shape)}")
    if keys.dim() != 3 or keys.size(0) != query.size(0):
        raise ValueError(f"keys: expected (batch={query.size(0)}, src_len, key_size), got shape {tuple(keys.shape)}")
    expected = (keys.size(0), 1, keys.size(1))
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask: expected shape {expected}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask: expected dtype torch.bool, got {mask.dtype}")


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim of scores (batch, T, src_len) with mask (batch, 1, src_len).

    Padded positions get -inf before the softmax, so their weight is exactly 0.
    """
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


class BahdanauAttention(nn.Module):
    """Additive attention: score(q, k) = v^T tanh(W_q q + W_k k)."""

    def __init__(self, key_size: int, query_size: int, hidden_size: int) -> None:
        super().__init__()
        self.key_layer = nn.Linear(key_size, hidden_size, bias=False)
        self.query_layer = nn.Linear(query_size, hidden_size, bias=False)
        self.energy_layer = nn.Linear(hidden_size, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """Project keys (batch, src_len, key_size) -> (batch, src_len, hidden_size).

        Done once per source batch; decoding steps then reuse the result.
        """
        return self.key_layer(keys)

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor, proj_keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend with query (batch, T, query_size) over keys (batch, src_len, key_size).

        mask: (batch, 1, src_len) bool, True on real tokens. proj_keys: optional
        ``project_keys(keys)`` cached by the caller. Returns context (batch, T, key_size)
        and weights (batch, T, src_len).
        """
        _check_inputs(query, keys, mask)
        if proj_keys is None:
            proj_keys = self.project_keys(keys)
        # (batch, T, 1, hidden) + (batch, 1, src_len, hidden) -> (batch, T, src_len, hidden)
        hidden = torch.tanh(self.query_layer(query).unsqueeze(2) + proj_keys.unsqueeze(1))
        scores = self.energy_layer(hidden).squeeze(-1)
        weights = _masked_softmax(scores, mask)
        return torch.bmm(weights, keys), weights


class LuongAttention(nn.Module):
    """Multiplicative attention: ``dot`` score q.k or ``general`` score (W q).k."""

    def __init__(self, key_size: int, query_size: int, score: Literal["dot", "general"] = "general") -> None:
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"score: expected 'dot' or 'general', got {score!r}")
        if score == "dot" and key_size != query_size:
            raise ValueError(
                f"score='dot' needs key_size == query_size, got key_size={key_size}, "
                f"query_size={query_size}; use score='general'"
            )
        self.score = score
        # Projecting the query (not the keys) costs one small matmul per decoding step.
        self.query_layer = nn.Linear(query_size, key_size, bias=False) if score == "general" else None

    def project_keys(self, keys: Tensor) -> Tensor:
        """Return keys (batch, src_len, key_size) unchanged: Luong scores need no key projection."""
        return keys

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor, proj_keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend with query (batch, T, query_size) over keys (batch, src_len, key_size).

        mask: (batch, 1, src_len) bool, True on real tokens. proj_keys is accepted for
        interface parity with BahdanauAttention and ignored. Returns context
        (batch, T, key_size) and weights (batch, T, src_len).
        """
        _check_inputs(query, keys, mask)
        if self.query_layer is not None:
            query = self.query_layer(query)
        scores = torch.bmm(query, keys.transpose(1, 2))
        weights = _masked_softmax(scores, mask)
        return torch.bmm(weights, keys), weights
