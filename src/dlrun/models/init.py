"""Parameter initialization schemes selectable from config."""

from __future__ import annotations

from typing import Literal

from torch import nn

InitScheme = Literal["default", "xavier_uniform", "kaiming_normal", "orthogonal"]


def init_parameters(module: nn.Module, scheme: InitScheme) -> None:
    """Re-initialize weight matrices (dim >= 2) by ``scheme``; biases to zero; keep padding rows zero."""
    if scheme == "default":
        return
    fill = {
        "xavier_uniform": nn.init.xavier_uniform_,
        "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "orthogonal": nn.init.orthogonal_,
    }.get(scheme)
    if fill is None:
        raise ValueError(f"init: unknown scheme {scheme!r}; choose default, xavier_uniform, kaiming_normal, orthogonal")
    for name, param in module.named_parameters():
        if param.dim() >= 2:
            fill(param.data)
        elif name.endswith("bias"):
            nn.init.zeros_(param.data)
    for sub in module.modules():
        if isinstance(sub, nn.Embedding) and sub.padding_idx is not None:
            sub.weight.data[sub.padding_idx].zero_()
