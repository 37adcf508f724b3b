"""The recurrent language model: fused layer vs unrolled cells, carried state, weight tying, sampling."""

from __future__ import annotations

import pytest
import torch

from dlrun.models.lm_sampling import continue_prompt, next_token
from dlrun.models.rnn_lm import RNNLanguageModel, detach_state

V = 37


def twins(cell: str, **kwargs) -> tuple[RNNLanguageModel, RNNLanguageModel]:
    """The same weights as impl=layer and impl=cell."""
    torch.manual_seed(0)
    layer = RNNLanguageModel(V, emb_size=16, hidden_size=16, num_layers=2, cell=cell, impl="layer", **kwargs).double()
    unrolled = RNNLanguageModel(V, emb_size=16, hidden_size=16, num_layers=2, cell=cell, impl="cell", **kwargs).double()
    unrolled.load_state_dict(layer.state_dict())
    return layer, unrolled


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_layer_and_cell_agree_on_outputs_state_and_gradients(cell: str, dropout: float) -> None:
    layer, unrolled = twins(cell, dropout=dropout, tie_weights=True)
    tokens = torch.randint(0, V, (3, 9))
    state = tuple(torch.randn(2, 3, 16, dtype=torch.double) for _ in range(layer.state_size))
    results = []
    for net in (layer, unrolled):
        torch.manual_seed(1)  # the same dropout masks on both sides
        logits, new_state = net(tokens, state)
        loss = logits.logsumexp(-1).sum() + sum(s.square().sum() for s in new_state)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        results.append((logits, new_state, grads))
    (l1, s1, g1), (l2, s2, g2) = results
    assert l1.shape == (3, 9, V) and len(s1) == layer.state_size and s1[0].shape == (2, 3, 16)
    torch.testing.assert_close(l1, l2, rtol=1e-9, atol=1e-10)
    for a, b in zip(s1, s2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert any(float(g.abs().sum()) > 0 for g in g1)


def test_one_set_of_weights_two_ways_to_run_them() -> None:
    net = RNNLanguageModel(V, 8, 8, num_layers=2, tie_weights=True)
    assert net.cells[1].weight_hh is net.layers[1].weight_hh_l0
    assert net.output.weight is net.embedding.weight
    names = [name for name, _ in net.named_parameters()]
    assert not any(name.startswith("cells.") for name in names)  # shared, counted once
    cell_net = RNNLanguageModel(V, 8, 8, num_layers=2, tie_weights=True, impl="cell")
    cell_net.load_state_dict(net.state_dict())  # checkpoints move between implementations
    with pytest.raises(ValueError, match="tie_weights: needs hidden_size == emb_size"):
        RNNLanguageModel(V, 8, 16, tie_weights=True)
    with pytest.raises(ValueError, match="impl: expected 'layer' or 'cell'"):
        RNNLanguageModel(V, impl="scan")  # type: ignore[arg-type]


@pytest.mark.parametrize("impl", ["layer", "cell"])
def test_two_windows_with_carried_state_equal_one_long_window(impl: str) -> None:
    torch.manual_seed(0)
    net = RNNLanguageModel(V, 12, 12, num_layers=2, impl=impl).double().eval()
    tokens = torch.randint(0, V, (4, 10))
    whole, whole_state = net(tokens)
    first, state = net(tokens[:, :6])
    second, end_state = net(tokens[:, 6:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    for a, b in zip(end_state, whole_state, strict=True):
        torch.testing.assert_close(a, b)
    fresh, _ = net(tokens[:, 6:])  # from zeros: differs
    assert not torch.allclose(fresh, second)
    with pytest.raises(ValueError, match=r"state: expected 2 tensor\(s\) of shape \(2, 4, 12\)"):
        net(tokens, (state[0],))


def test_sampling_temperature_zero_and_top_k_one_are_greedy() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.9]])
    assert next_token(logits, 0.0).tolist() == [1, 0]
    generator = torch.Generator().manual_seed(0)
    assert next_token(logits, 5.0, top_k=1, generator=generator).tolist() == [1, 0]
    draws = torch.stack([next_token(logits, 1.0, top_k=2, generator=generator) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1, 2} and set(draws[:, 1].tolist()) == {0, 2}  # never outside the top 2

    torch.manual_seed(0)
    net = RNNLanguageModel(V, 8, 8).eval()
    out = continue_prompt(net, [3, 5], max_new_tokens=6, stop_index=3, temperature=0.0)
    tokens = torch.tensor([[3, 5]])
    expected = []
    for _ in range(6):  # greedy by hand, re-reading the whole sequence each time
        nxt = int(net(tokens)[0][0, -1].argmax())
        expected.append(nxt)
        if nxt == 3:
            break
        tokens = torch.cat([tokens, torch.tensor([[nxt]])], 1)
    assert out == expected
