"""The classification training loss uses its class weights, not only stores them."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlrun.objectives.classification import ClassificationModule

WEIGHTS = [1.0, 4.0, 0.25]

# training_step logs outside a Trainer here; Lightning warns and skips the log.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


def _module(class_weights: list[float] | None) -> ClassificationModule:
    torch.manual_seed(0)
    net = nn.Linear(5, 3)
    return ClassificationModule(
        net, functools.partial(torch.optim.SGD, lr=0.1), num_classes=3, class_weights=class_weights
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(12, 5, generator=generator)
    y = torch.tensor([0, 1, 2, 1, 1, 0, 2, 2, 1, 0, 1, 2])
    return x, y


def test_training_loss_is_the_weighted_cross_entropy() -> None:
    weighted, plain = _module(WEIGHTS), _module(None)
    x, y = _batch()
    expected = F.cross_entropy(weighted.net(x), y, weight=torch.tensor(WEIGHTS))
    unweighted = F.cross_entropy(plain.net(x), y)
    got = weighted.training_step((x, y), 0)
    # A loss that keeps the weights on the module but ignores them would equal the unweighted one.
    assert abs(expected.item() - unweighted.item()) > 1e-3
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert plain.training_step((x, y), 0).item() == pytest.approx(unweighted.item(), rel=1e-6)


def test_weights_change_the_gradient_direction() -> None:
    x, y = _batch()
    grads = []
    for weights in (WEIGHTS, None):
        module = _module(weights)
        module.training_step((x, y), 0).backward()
        grads.append(module.net.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1], atol=1e-4)
    # Class 1 carries four times the weight: its logit row moves most.
    assert grads[0][1].abs().sum() > grads[1][1].abs().sum()
