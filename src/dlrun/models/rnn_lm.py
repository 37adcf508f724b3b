"""Word-level recurrent language model: embedding, stacked LSTM/GRU, softmax layer; fused or unrolled.

``impl="layer"`` runs each recurrent layer as one fused ``nn.LSTM``/``nn.GRU`` call over the window;
``impl="cell"`` runs the very same parameters step by step through ``nn.LSTMCell``/``nn.GRUCell``
(a Python loop over time). Both compute the same function; the switch exists to measure what the
fused layer buys (``bench/lm_impl_speed.py``). Each cell shares its ``Parameter`` objects with its
layer, so a checkpoint of one implementation loads into the other.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Cell = Literal["lstm", "gru"]
Impl = Literal["layer", "cell"]
State = tuple[Tensor, ...]
"""Recurrent state: LSTM ``(h, c)``, GRU ``(h,)``; each ``(num_layers, batch, hidden_size)``."""

_LAYERS = {"lstm": (nn.LSTM, nn.LSTMCell), "gru": (nn.GRU, nn.GRUCell)}


class RNNLanguageModel(nn.Module):
    """Next-token logits for windows of a token stream, carrying the recurrent state between windows.

    Dropout (rate ``dropout``) is applied to the embeddings, between recurrent layers and before the
    output layer, as whole-tensor masks, so both implementations draw the same masks from the same seed.
    ``tie_weights`` shares the embedding matrix with the output layer (needs ``hidden_size == emb_size``).
    """

    def __init__(
        self,
        vocab_size: int,
        emb_size: int = 256,
        hidden_size: int = 256,
        num_layers: int = 1,
        cell: Cell = "lstm",
        dropout: float = 0.0,
        tie_weights: bool = False,
        impl: Impl = "layer",
    ) -> None:
        super().__init__()
        if cell not in _LAYERS:
            raise ValueError(f"cell: expected 'lstm' or 'gru', got {cell!r}")
        if impl not in ("layer", "cell"):
            raise ValueError(f"impl: expected 'layer' or 'cell', got {impl!r}")
        for key, value in (
            ("vocab_size", vocab_size),
            ("emb_size", emb_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            if value < 1:
                raise ValueError(f"{key}: must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        if tie_weights and hidden_size != emb_size:
            raise ValueError(f"tie_weights: needs hidden_size == emb_size, got {hidden_size} and {emb_size}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.impl = impl
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.dropout = nn.Dropout(dropout)
        layer_cls, cell_cls = _LAYERS[cell]
        sizes = [emb_size] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(layer_cls(size, hidden_size, batch_first=True) for size in sizes)
        self.cells = nn.ModuleList(cell_cls(size, hidden_size) for size in sizes)
        for layer, unit in zip(self.layers, self.cells, strict=True):
            # Same Parameter objects: one set of weights, two ways to run them (as weight tying shares).
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                setattr(unit, name, getattr(layer, f"{name}_l0"))
        self.output = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.output.weight = self.embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small uniform embeddings (and tied output), zero output bias; recurrent layers keep torch's init."""
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.output.weight is not self.embedding.weight:
            nn.init.uniform_(self.output.weight, -0.1, 0.1)
        nn.init.zeros_(self.output.bias)

    @property
    def state_size(self) -> int:
        """Tensors in a state: 2 for LSTM (h, c), 1 for GRU (h)."""
        return 2 if self.cell == "lstm" else 1

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state: ``state_size`` tensors ``(num_layers, batch_size, hidden_size)``."""
        weight = self.output.weight
        shape = (self.num_layers, batch_size, self.hidden_size)
        return tuple(weight.new_zeros(shape, device=device, dtype=dtype) for _ in range(self.state_size))

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits ``(batch, T, vocab_size)`` for tokens ``(batch, T)`` and the state after the last step.

        ``state`` (None: zeros) is what a previous call returned for the preceding window of the same rows.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens: expected shape (batch, T), got {tuple(tokens.shape)}")
        batch_size = tokens.size(0)
        if state is None:
            state = self.init_state(batch_size, tokens.device)
        expected = (self.num_layers, batch_size, self.hidden_size)
        if len(state) != self.state_size or any(tuple(s.shape) != expected for s in state):
            shapes = [tuple(s.shape) for s in state]
            raise ValueError(f"state: expected {self.state_size} tensor(s) of shape {expected}, got {shapes}")
        x = self.dropout(self.embedding(tokens))
        finals: list[State] = []
        for index in range(self.num_layers):
            layer_state = tuple(s[index] for s in state)
            run = self._run_layer if self.impl == "layer" else self._run_cell
            x, final = run(index, x, layer_state)
            finals.append(final)
            # contiguous(): dropout draws its mask in memory order, and the fused layer's batch-first output
            # is a transposed view; one layout gives both implementations the same masks.
            x = self.dropout(x.contiguous())
        new_state = tuple(torch.stack([final[k] for final in finals]) for k in range(self.state_size))
        return self.output(x), new_state

    def _run_layer(self, index: int, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One fused layer over ``x (batch, T, in)`` from ``state`` (each ``(batch, hidden)``)."""
        layer = self.layers[index]
        if self.cell == "lstm":
            out, (h, c) = layer(x, (state[0].unsqueeze(0).contiguous(), state[1].unsqueeze(0).contiguous()))
            return out, (h[0], c[0])
        out, h = layer(x, state[0].unsqueeze(0).contiguous())
        return out, (h[0],)

    def _run_cell(self, index: int, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The same layer unrolled: one cell call per time step of ``x (batch, T, in)``."""
        unit = self.cells[index]
        outputs = []
        if self.cell == "lstm":
            h, c = state
            for step in x.unbind(1):
                h, c = unit(step, (h, c))
                outputs.append(h)
            return torch.stack(outputs, dim=1), (h, c)
        (h,) = state
        for step in x.unbind(1):
            h = unit(step, h)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h,)


def detach_state(state: State | None) -> State | None:
    """The state cut from its graph: the next window's gradients stop here (truncated BPTT)."""
    return None if state is None else tuple(s.detach() for s in state)
