"""Recurrent (GRU) encoder over padded, length-sorted-or-not source batches."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class RecurrentEncoder(nn.Module):
    """GRU encoder; packing keeps padding out of the recurrence, so outputs ignore extra padding."""

    def __init__(
        self,
        emb_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.emb_dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(
            emb_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            # nn.GRU warns when inter-layer dropout is set for a single layer.
            dropout=dropout if num_layers > 1 else 0.0,
        )

    @property
    def output_size(self) -> int:
        """Size of each output vector and of the final state: hidden_size * directions."""
        return self.hidden_size * self.num_directions

    def forward(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode embedded (batch, src_len, emb_size) with lengths (batch,).

        Returns outputs (batch, src_len, output_size), zero on padded positions, and the
        last layer's final state (batch, output_size), both directions concatenated.
        """
        batch_size, src_len, _ = embedded.shape
        if lengths.shape != (batch_size,):
            raise ValueError(
                f"lengths: expected shape ({batch_size},), got {tuple(lengths.shape)} "
                f"(embedded has shape {tuple(embedded.shape)})"
            )
        packed = pack_padded_sequence(self.emb_dropout(embedded), lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, hidden = self.rnn(packed)
        # total_length keeps src_len even if every sentence is shorter, so shapes match the mask.
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src_len)
        # hidden: (layers * directions, batch, hidden) -> last layer, directions side by side.
        last = hidden.view(self.num_layers, self.num_directions, batch_size, self.hidden_size)[-1]
        final = last.transpose(0, 1).reshape(batch_size, self.output_size)
        return outputs, final
