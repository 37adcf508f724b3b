"""The classic MNIST convnet of the Keras and PyTorch examples."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrun.models.init import InitScheme, init_parameters
from dlrun.models.layers import Activation, make_activation


class CNN(nn.Module):
    """``conv -> act -> conv -> act -> max-pool -> dropout -> flatten -> dense -> act -> dropout -> dense``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        kernel_sizes: Sequence[int] = (3, 3),
        pool_size: int = 2,
        dense_size: int = 128,
        conv_dropout: float = 0.25,
        dense_dropout: float = 0.5,
        activation: Activation = "relu",
        flatten_size: int | None = None,
        init: InitScheme = "default",
    ) -> None:
        super().__init__()
        for name, rate in (("conv_dropout", conv_dropout), ("dense_dropout", dense_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name}: must be in [0, 1), got {rate}")
        if len(channels) != len(kernel_sizes):
            raise ValueError(f"kernel_sizes: need one per conv layer ({len(channels)}), got {len(kernel_sizes)}")
        self.input_shape = tuple(input_shape)
        in_channels, height, width = self.input_shape
        convs: list[nn.Module] = []
        for out_channels, kernel in zip(channels, kernel_sizes, strict=True):
            convs += [nn.Conv2d(in_channels, out_channels, kernel), make_activation(activation)]
            in_channels, height, width = out_channels, height - kernel + 1, width - kernel + 1
        if height < pool_size or width < pool_size:
            raise ValueError(
                f"kernel_sizes: convs shrink {self.input_shape} to {height}x{width}, below pool_size {pool_size}"
            )
        self.features = nn.Sequential(*convs, nn.MaxPool2d(pool_size), nn.Dropout(conv_dropout), nn.Flatten())
        # flatten_size is derived from the shapes; setting it explicitly checks a config against them.
        derived = in_channels * (height // pool_size) * (width // pool_size)
        if flatten_size is not None and flatten_size != derived:
            raise ValueError(
                f"flatten_size: {flatten_size} does not match the conv output "
                f"({in_channels}x{height // pool_size}x{width // pool_size} = {derived})"
            )
        self.head = nn.Sequential(
            nn.Linear(derived, dense_size),
            make_activation(activation),
            nn.Dropout(dense_dropout),
            nn.Linear(dense_size, num_classes),
        )
        init_parameters(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(batch, channels, height, width)`` -> logits ``(batch, num_classes)``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"CNN input: expected (batch, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )
        return self.head(self.features(x))
