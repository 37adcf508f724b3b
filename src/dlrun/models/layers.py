"""Small building blocks shared by the classifiers."""

from __future__ import annotations

from typing import Literal

from torch import nn

Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def make_activation(name: Activation) -> nn.Module:
    """A fresh activation module by name."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation: unknown {name!r}; choose {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()
