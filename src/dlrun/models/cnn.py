"""Convnets for image classification: the Keras/PyTorch example net and deeper, batch-normalized stacks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrun.models.init import InitScheme, init_parameters
from dlrun.models.layers import Activation, make_activation


class CNN(nn.Module):
    """Conv stages ``(conv -> [bn] -> act)+ -> max-pool -> dropout``, then ``dense -> act -> dropout -> dense``.

    With the defaults (one pool after the last of two convs, no batch norm) this is the convnet of
    the Keras and PyTorch MNIST examples; ``pool_after`` and ``batch_norm`` give the deeper
    VGG-style stacks that reach 99.5 %+ on MNIST.
    """

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
        pool_after: Sequence[int] | None = None,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        for name, rate in (("conv_dropout", conv_dropout), ("dense_dropout", dense_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name}: must be in [0, 1), got {rate}")
        if len(channels) != len(kernel_sizes):
            raise ValueError(f"kernel_sizes: need one per conv layer ({len(channels)}), got {len(kernel_sizes)}")
        pools = _pool_positions(pool_after, len(channels))
        self.input_shape = tuple(input_shape)
        in_channels, height, width = self.input_shape
        layers: list[nn.Module] = []
        for index, (out_channels, kernel) in enumerate(zip(channels, kernel_sizes, strict=True), start=1):
            # A bias before batch norm is cancelled by its mean subtraction.
            layers.append(nn.Conv2d(in_channels, out_channels, kernel, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(make_activation(activation))
            in_channels, height, width = out_channels, height - kernel + 1, width - kernel + 1
            if index in pools:
                if height < pool_size or width < pool_size:
                    raise ValueError(
                        f"kernel_sizes: convs shrink {self.input_shape} to {height}x{width} before pool "
                        f"{pools.index(index) + 1}, below pool_size {pool_size}"
                    )
                layers += [nn.MaxPool2d(pool_size), nn.Dropout(conv_dropout)]
                height, width = height // pool_size, width // pool_size
            elif height < 1 or width < 1:
                raise ValueError(f"kernel_sizes: convs shrink {self.input_shape} below one pixel")
        self.features = nn.Sequential(*layers, nn.Flatten())
        # flatten_size is derived from the shapes; setting it explicitly checks a config against them.
        derived = in_channels * height * width
        if flatten_size is not None and flatten_size != derived:
            raise ValueError(
                f"flatten_size: {flatten_size} does not match the conv output "
                f"({in_channels}x{height}x{width} = {derived})"
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


def _pool_positions(pool_after: Sequence[int] | None, convs: int) -> list[int]:
    """The conv counts after which a pool follows: ``pool_after`` checked, or just the last conv."""
    if pool_after is None:
        return [convs]
    positions = list(pool_after)
    if not positions or any(not 1 <= p <= convs for p in positions) or positions != sorted(set(positions)):
        raise ValueError(f"pool_after: need increasing conv counts in 1..{convs}, got {positions}")
    return positions
