"""The task layer's view of plain Lightning modules: what task=predict reads from them."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from dlrun.contracts import objective_view
from dlrun.errors import ConfigError


class Plain(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class OwnPredict(Plain):
    def predict_step(self, batch, batch_idx):  # returns probabilities already, as the contract asks
        return torch.full((len(batch[0]), 3), 1 / 3)


class Scalar(Plain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).sum(-1)


BATCH = (torch.arange(8.0).reshape(2, 4), torch.tensor([0, 2]))


def test_a_plain_module_without_predict_step_gives_the_softmax_of_forward_on_the_inputs() -> None:
    module = Plain()
    probabilities = objective_view(module).class_probabilities(BATCH)
    assert torch.allclose(probabilities, torch.softmax(module(BATCH[0]), -1))
    assert torch.allclose(probabilities.sum(-1), torch.ones(2))


def test_an_own_predict_step_is_taken_as_it_is() -> None:
    assert torch.equal(objective_view(OwnPredict()).class_probabilities(BATCH), torch.full((2, 3), 1 / 3))


def test_outputs_that_are_not_class_scores_stop_with_one_line_naming_the_module() -> None:
    with pytest.raises(ConfigError) as info:
        objective_view(Scalar()).class_probabilities(BATCH)
    assert str(info.value) == (
        "task=predict: test_contract_views.Scalar.forward(inputs) gave [2]; predictions need class scores "
        "(batch, classes) - define predict_step(batch, batch_idx) to return them"
    )
