"""GRU decoder with attention, input feeding, scheduled sampling and optional tied embeddings."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class EncoderMemory(NamedTuple):
    """What the decoder attends to, prepared once per source batch."""

    outputs: Tensor
    """(batch, src_len, encoder_output_size)"""
    proj_keys: Tensor
    """(batch, src_len, *) the attention's cached key projection"""
    mask: Tensor
    """(batch, 1, src_len) bool, True on real tokens"""

    def index_select(self, index: Tensor) -> EncoderMemory:
        """Pick batch rows by index (n,) (beam search tiles and reorders with this)."""
        return EncoderMemory(*(t.index_select(0, index) for t in self))


class DecoderState(NamedTuple):
    """Recurrent state carried from one decoding step to the next."""

    hidden: Tensor
    """(num_layers, batch, hidden_size) GRU hidden state"""
    att_vector: Tensor
    """(batch, 1, hidden_size) previous attentional vector (fed back when input feeding)"""

    def index_select(self, index: Tensor) -> DecoderState:
        """Pick batch rows by index (n,) (beam search reorders hypotheses with this)."""
        return DecoderState(self.hidden.index_select(1, index), self.att_vector.index_select(0, index))


class AttentionDecoder(nn.Module):
    """GRU decoder (Luong style): h_t = GRU([y_{t-1}; a_{t-1}]), a_t = tanh(W [h_t; ctx_t]).

    The decoder owns the target embedding and the output layer, because scheduled
    sampling feeds its own predictions back through the embedding.
    """

    def __init__(
        self,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        encoder_output_size: int,
        attention: nn.Module,
        num_layers: int = 1,
        dropout: float = 0.0,
        input_feeding: bool = True,
        tie_embeddings: bool = False,
        teacher_forcing: float = 1.0,
        pad_index: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing: expected a ratio in [0, 1], got {teacher_forcing}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.input_feeding = input_feeding
        self.teacher_forcing = teacher_forcing
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=pad_index)
        self.emb_dropout = nn.Dropout(dropout)
        rnn_input_size = emb_size + hidden_size if input_feeding else emb_size
        self.rnn = nn.GRU(
            rnn_input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.bridge = nn.Linear(encoder_output_size, num_layers * hidden_size)
        self.attention = attention
        self.att_vector_layer = nn.Linear(hidden_size + encoder_output_size, hidden_size)
        self.hidden_dropout = nn.Dropout(dropout)
        # Tying needs output features of emb_size: project the attentional vector down first.
        self.pre_output = nn.Linear(hidden_size, emb_size, bias=False) if tie_embeddings else None
        self.output_layer = nn.Linear(emb_size if tie_embeddings else hidden_size, vocab_size)
        if tie_embeddings:
            self.output_layer.weight = self.embed.weight

    def prepare_memory(self, encoder_outputs: Tensor, src_mask: Tensor) -> EncoderMemory:
        """Wrap encoder_outputs (batch, src_len, enc_size) and src_mask (batch, 1, src_len)."""
        return EncoderMemory(encoder_outputs, self.attention.project_keys(encoder_outputs), src_mask)

    def init_state(self, encoder_final: Tensor) -> DecoderState:
        """Initial state from encoder_final (batch, enc_size) through the linear+tanh bridge."""
        batch_size = encoder_final.size(0)
        hidden = torch.tanh(self.bridge(encoder_final))
        hidden = hidden.view(batch_size, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        att_vector = encoder_final.new_zeros(batch_size, 1, self.hidden_size)
        return DecoderState(hidden, att_vector)

    def _logits(self, att_vectors: Tensor) -> Tensor:
        """Map att_vectors (batch, T, hidden_size) to logits (batch, T, vocab_size)."""
        if self.pre_output is not None:
            att_vectors = self.pre_output(att_vectors)
        return self.output_layer(att_vectors)

    def _step(
        self, embedded: Tensor, memory: EncoderMemory, state: DecoderState
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One step from embedded (batch, 1, emb_size).

        Returns the attentional vector (batch, 1, hidden_size), the new state and the
        attention weights (batch, 1, src_len).
        """
        rnn_input = self.emb_dropout(embedded)
        if self.input_feeding:
            rnn_input = torch.cat([rnn_input, state.att_vector], dim=-1)
        output, hidden = self.rnn(rnn_input, state.hidden)
        context, weights = self.attention(output, memory.outputs, memory.mask, memory.proj_keys)
        att_vector = self.hidden_dropout(torch.tanh(self.att_vector_layer(torch.cat([output, context], dim=-1))))
        return att_vector, DecoderState(hidden, att_vector), weights

    def step(
        self, prev_tokens: Tensor, memory: EncoderMemory, state: DecoderState
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """Decode one token from prev_tokens (batch,).

        Returns logits (batch, vocab_size), the new state and attention (batch, src_len).
        """
        att_vector, state, weights = self._step(self.embed(prev_tokens).unsqueeze(1), memory, state)
        return self._logits(att_vector).squeeze(1), state, weights.squeeze(1)

    def forward(self, tgt_in: Tensor, memory: EncoderMemory, state: DecoderState) -> tuple[Tensor, Tensor]:
        """Decode the whole of tgt_in (batch, tgt_len), starting with <bos>.

        Returns logits (batch, tgt_len, vocab_size) and attention (batch, tgt_len, src_len).
        In training mode with teacher_forcing < 1, each step feeds back the previous
        argmax prediction instead of the gold token with probability 1 - teacher_forcing.
        """
        sampling = self.training and self.teacher_forcing < 1.0
        if not self.input_feeding and not sampling:
            # Without feedback between steps the GRU and attention run over all steps at once.
            output, _ = self.rnn(self.emb_dropout(self.embed(tgt_in)), state.hidden)
            context, weights = self.attention(output, memory.outputs, memory.mask, memory.proj_keys)
            att_vectors = self.hidden_dropout(torch.tanh(self.att_vector_layer(torch.cat([output, context], dim=-1))))
            return self._logits(att_vectors), weights

        att_vectors, all_weights, step_logits = [], [], []
        tokens = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            if sampling and t > 0:
                predicted = step_logits[-1].argmax(dim=-1)
                use_gold = torch.rand(tokens.shape, device=tokens.device) < self.teacher_forcing
                tokens = torch.where(use_gold, tgt_in[:, t], predicted)
            elif t > 0:
                tokens = tgt_in[:, t]
            att_vector, state, weights = self._step(self.embed(tokens).unsqueeze(1), memory, state)
            att_vectors.append(att_vector)
            all_weights.append(weights)
            if sampling:
                step_logits.append(self._logits(att_vector).squeeze(1))
        if sampling:
            return torch.stack(step_logits, dim=1), torch.cat(all_weights, dim=1)
        # One output projection over all steps is much cheaper than one per step.
        return self._logits(torch.cat(att_vectors, dim=1)), torch.cat(all_weights, dim=1)
