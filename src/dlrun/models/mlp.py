"""Multi-layer perceptron classifier."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from dlrun.models.init import InitScheme, init_parameters
from dlrun.models.layers import Activation, make_activation


class MLP(nn.Module):
    """Flatten, then ``Linear -> [norm] -> activation -> dropout`` per hidden layer, then a linear head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[int] = (512, 512),
        activation: Activation = "relu",
        dropout: float = 0.2,
        norm: Literal["none", "batch", "layer"] = "none",
        init: InitScheme = "default",
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        if any(size < 1 for size in hidden_sizes):
            raise ValueError(f"hidden_sizes: every size must be >= 1, got {list(hidden_sizes)}")
        self.input_shape = tuple(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.input_shape)
        for size in hidden_sizes:
            layers.append(nn.Linear(width, size))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(size))
            elif norm == "layer":
                layers.append(nn.LayerNorm(size))
            layers += [make_activation(activation), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)
        init_parameters(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs ``(batch, *input_shape)`` -> logits ``(batch, num_classes)``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"MLP input: expected (batch, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )
        return self.layers(x)
