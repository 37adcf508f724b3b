"""Continuing a prompt with a language model ``(tokens, state) -> (logits, state)`` by sampling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

LanguageModel = Callable[[Tensor, Any], tuple[Tensor, Any]]


def next_token(
    logits: Tensor, temperature: float = 1.0, top_k: int = 0, generator: torch.Generator | None = None
) -> Tensor:
    """Draw one id per row from ``logits (batch, vocab)``: softmax(logits / temperature) over the ``top_k`` best.

    ``temperature == 0`` takes the argmax; ``top_k == 0`` keeps the whole vocabulary. Returns ``(batch,)``.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits: expected shape (batch, vocab), got {tuple(logits.shape)}")
    if temperature < 0 or top_k < 0:
        raise ValueError(f"temperature and top_k: must be >= 0, got {temperature} and {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    scores = logits.float() / temperature
    if 0 < top_k < scores.size(-1):
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = scores.softmax(dim=-1)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)


@torch.no_grad()
def continue_prompt(
    model: LanguageModel,
    prompt: Sequence[int],
    max_new_tokens: int,
    stop_index: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> list[int]:
    """Ids generated after ``prompt`` (a non-empty id list, read from a zero state), up to ``stop_index`` included.

    Stops after ``max_new_tokens`` ids or at ``stop_index`` (e.g. ``<eos>``), whichever comes first.
    """
    if not prompt:
        raise ValueError("prompt: needs at least one id (e.g. <eos> to start a sentence)")
    tokens = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    logits, state = model(tokens, None)
    generated: list[int] = []
    for _ in range(max_new_tokens):
        token = next_token(logits[:, -1], temperature, top_k, generator)
        generated.append(int(token))
        if generated[-1] == stop_index:
            break
        logits, state = model(token.view(1, 1), state)
    return generated
