"""Sequence-to-sequence translation model: embeddings, GRU encoder, attention decoder."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from dlrun.models.attention import BahdanauAttention, LuongAttention
from dlrun.models.decoder import AttentionDecoder, DecoderState, EncoderMemory
from dlrun.models.encoder import RecurrentEncoder
from dlrun.models.init import InitScheme, init_parameters

AttentionType = Literal["bahdanau", "dot", "general"]


class Seq2Seq(nn.Module):
    """GRU encoder-decoder with attention (Bahdanau 2015 / Luong 2015)."""

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_index: int = 0,
        bos_index: int = 2,
        eos_index: int = 3,
        emb_size: int = 256,
        hidden_size: int = 512,
        enc_layers: int = 1,
        dec_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.3,
        attention: AttentionType = "bahdanau",
        input_feeding: bool = True,
        tie_embeddings: bool = False,
        teacher_forcing: float = 1.0,
        init: InitScheme = "default",
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        self.pad_index = pad_index
        self.bos_index = bos_index
        self.eos_index = eos_index
        self.src_embed = nn.Embedding(src_vocab_size, emb_size, padding_idx=pad_index)
        self.encoder = RecurrentEncoder(emb_size, hidden_size, enc_layers, bidirectional, dropout)
        enc_size = self.encoder.output_size
        if attention == "bahdanau":
            attention_module: nn.Module = BahdanauAttention(enc_size, hidden_size, hidden_size)
        elif attention in ("dot", "general"):
            if attention == "dot" and enc_size != hidden_size:
                raise ValueError(
                    f"attention: 'dot' needs encoder output size ({enc_size}) == hidden_size "
                    f"({hidden_size}); use bidirectional=false or attention=general"
                )
            attention_module = LuongAttention(enc_size, hidden_size, score=attention)
        else:
            raise ValueError(f"attention: expected bahdanau, dot or general, got {attention!r}")
        self.decoder = AttentionDecoder(
            vocab_size=tgt_vocab_size,
            emb_size=emb_size,
            hidden_size=hidden_size,
            encoder_output_size=enc_size,
            attention=attention_module,
            num_layers=dec_layers,
            dropout=dropout,
            input_feeding=input_feeding,
            tie_embeddings=tie_embeddings,
            teacher_forcing=teacher_forcing,
            pad_index=pad_index,
        )
        init_parameters(self, init)

    def _check_src(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        """Raise ValueError unless src is (batch, src_len) and src_lengths (batch,) lie in 1..src_len.

        Returns src_lengths on the host (packing needs them there).
        """
        if src.dim() != 2:
            raise ValueError(f"src: expected shape (batch, src_len), got {tuple(src.shape)}")
        if src_lengths.shape != (src.size(0),):
            raise ValueError(
                f"src_lengths: expected shape ({src.size(0)},) to match src {tuple(src.shape)}, "
                f"got {tuple(src_lengths.shape)}"
            )
        # Packing needs lengths on the host anyway, so this check costs no extra sync.
        lengths = src_lengths.cpu()
        if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > src.size(1)):
            raise ValueError(
                f"src_lengths: values must lie in 1..{src.size(1)} (src {tuple(src.shape)}), "
                f"got min {int(lengths.min())}, max {int(lengths.max())}"
            )
        return lengths

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[EncoderMemory, DecoderState]:
        """Encode src (batch, src_len) with src_lengths (batch,).

        Returns the decoder's memory (outputs (batch, src_len, enc_size), mask
        (batch, 1, src_len)) and its initial state (hidden (dec_layers, batch, hidden_size)).
        """
        return self._encode(src, self._check_src(src, src_lengths))

    def _encode(self, src: Tensor, src_lengths: Tensor) -> tuple[EncoderMemory, DecoderState]:
        """Encode without input checks; src_lengths (batch,) on the host."""
        outputs, final = self.encoder(self.src_embed(src), src_lengths)
        src_mask = (src != self.pad_index).unsqueeze(1)
        return self.decoder.prepare_memory(outputs, src_mask), self.decoder.init_state(final)

    def decode_step(
        self, prev_tokens: Tensor, memory: EncoderMemory, state: DecoderState
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoding step from prev_tokens (batch,).

        Returns logits (batch, tgt_vocab), the next state and attention (batch, src_len).
        """
        if prev_tokens.shape != (memory.outputs.size(0),):
            raise ValueError(
                f"prev_tokens: expected shape ({memory.outputs.size(0)},) to match memory "
                f"{tuple(memory.outputs.shape)}, got {tuple(prev_tokens.shape)}"
            )
        return self.decoder.step(prev_tokens, memory, state)

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced logits (batch, tgt_len, tgt_vocab) for tgt_in (batch, tgt_len).

        src: (batch, src_len), src_lengths: (batch,), tgt_in starts with <bos>. With
        return_attention, also returns attention weights (batch, tgt_len, src_len).
        """
        host_lengths = self._check_src(src, src_lengths)
        if tgt_in.dim() != 2 or tgt_in.size(0) != src.size(0):
            raise ValueError(
                f"tgt_in: expected shape ({src.size(0)}, tgt_len) to match src {tuple(src.shape)}, "
                f"got {tuple(tgt_in.shape)}"
            )
        memory, state = self._encode(src, host_lengths)
        logits, attention = self.decoder(tgt_in, memory, state)
        return (logits, attention) if return_attention else logits
