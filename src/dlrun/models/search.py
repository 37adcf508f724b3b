"""Batched greedy and beam search over a Seq2Seq-like model.

The model needs ``encode(src, src_lengths) -> (memory, state)``,
``decode_step(prev_tokens, memory, state) -> (logits, state, attention)`` and the
attributes ``bos_index``, ``eos_index``, ``pad_index``; memory and state need
``index_select(index)`` over the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


@torch.no_grad()
def greedy_search(model: Any, src: Tensor, src_lengths: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """Decode src (batch, src_len) with src_lengths (batch,) by taking the argmax at each step.

    Returns tokens (batch, out_len) without <bos>, ending at <eos> (included) and padded
    after it, and attention (batch, out_len, src_len), zero after <eos>. out_len <= max_len.
    """
    if max_len < 1:
        raise ValueError(f"max_len: must be >= 1, got {max_len}")
    memory, state = model.encode(src, src_lengths)
    batch_size = src.size(0)
    prev = src.new_full((batch_size,), model.bos_index)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=src.device)
    tokens, attention = [], []
    for _ in range(max_len):
        logits, state, weights = model.decode_step(prev, memory, state)
        # Same selection as beam search's first stage, so beam_size=1 reproduces it bit for bit.
        prev = torch.log_softmax(logits.float(), dim=-1).topk(1, dim=-1).indices.squeeze(1)
        tokens.append(prev.masked_fill(finished, model.pad_index))
        attention.append(weights.masked_fill(finished.unsqueeze(1), 0.0))
        finished = finished | (prev == model.eos_index)
        if bool(finished.all()):
            break
    return torch.stack(tokens, dim=1), torch.stack(attention, dim=1)


def gnmt_length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016); alpha=0 disables it."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int,
    length_penalty: float = 1.0,
    max_len: int = 80,
) -> Tensor:
    """Decode src (batch, src_len) with src_lengths (batch,) by beam search.

    Hypotheses are ranked by log-probability / GNMT length penalty (``length_penalty`` is
    alpha). A sentence stops when its best live beam ends in <eos>. Returns tokens
    (batch, out_len) without <bos>, ending at <eos> and padded after it.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size: must be >= 1, got {beam_size}")
    if max_len < 1:
        raise ValueError(f"max_len: must be >= 1, got {max_len}")
    device = src.device
    batch_size = src.size(0)
    memory, state = model.encode(src, src_lengths)
    # Every sentence gets beam_size rows, sentence-major: row = sentence * beam_size + beam.
    tile = torch.arange(batch_size, device=device).repeat_interleave(beam_size)
    memory, state = memory.index_select(tile), state.index_select(tile)
    row_offset = (torch.arange(batch_size, device=device) * beam_size).unsqueeze(1)

    alive = src.new_full((batch_size * beam_size, 1), model.bos_index)
    # Only beam 0 is live at the start, so the first step does not pick one token k times.
    scores = torch.full((batch_size, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0
    done = [False] * batch_size
    best: list[tuple[float, list[int]]] = [(float("-inf"), []) for _ in range(batch_size)]

    for step in range(max_len):
        logits, state, _ = model.decode_step(alive[:, -1], memory, state)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        # Two stages: the top beam_size tokens of each beam contain the global top beam_size.
        n_cand = min(beam_size, log_probs.size(-1))
        cand_logp, cand_tokens = log_probs.topk(n_cand, dim=-1)  # (batch * beam, n_cand)
        cand_scores = (scores.view(-1, 1) + cand_logp).view(batch_size, beam_size * n_cand)
        scores, flat = cand_scores.topk(beam_size, dim=-1)  # (batch, beam), sorted best first
        origin = (flat // n_cand + row_offset).view(-1)  # source row of each new beam
        next_tokens = cand_tokens.view(-1)[origin * n_cand + (flat % n_cand).view(-1)]
        alive = torch.cat([alive.index_select(0, origin), next_tokens.unsqueeze(1)], dim=1)
        state = state.index_select(origin)

        ended = (next_tokens == model.eos_index).view(batch_size, beam_size)
        if step == max_len - 1:
            ended = torch.ones_like(ended)
        ended &= torch.isfinite(scores)
        if bool(ended.any()):
            penalty = gnmt_length_penalty(step + 1, length_penalty)
            for sentence, beam in ended.nonzero().tolist():
                if done[sentence]:
                    continue
                normalized = float(scores[sentence, beam]) / penalty
                if normalized > best[sentence][0]:
                    best[sentence] = (normalized, alive[sentence * beam_size + beam, 1:].tolist())
            for sentence in ended[:, 0].nonzero().flatten().tolist():
                done[sentence] = True
            # Ended beams stop growing; sentences that are done stop entirely.
            scores = scores.masked_fill(ended, float("-inf"))
            scores[torch.tensor(done, device=device)] = float("-inf")
        if all(done):
            break

    out_len = max(len(tokens) for _, tokens in best)
    out = src.new_full((batch_size, out_len), model.pad_index)
    for sentence, (_, tokens) in enumerate(best):
        out[sentence, : len(tokens)] = torch.tensor(tokens, dtype=out.dtype)
    return out
