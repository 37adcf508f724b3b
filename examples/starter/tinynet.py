"""A small network, plain PyTorch: it knows nothing of dlrun, Lightning or Hydra."""

from __future__ import annotations

import math

import torch
from torch import nn


class TinyNet(nn.Module):
    """Flatten, then ``depth`` hidden layers of ``hidden`` units with GELU, then logits.

    ``input_shape`` and ``num_classes`` come from the data module's ``dims`` (any data: points or MNIST).
    """

    def __init__(
        self, input_shape: list[int], num_classes: int, hidden: int = 64, depth: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: must be >= 1, got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, *input_shape) -> logits (batch, num_classes)."""
        return self.layers(x)
