"""Seq2seq building blocks: attention masking, padding invariance, search, losses, learning."""

from __future__ import annotations

import itertools
import math

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

from dlrun.models.attention import BahdanauAttention, LuongAttention
from dlrun.models.search import beam_search, greedy_search
from dlrun.models.seq2seq import Seq2Seq
from dlrun.objectives.losses import masked_cross_entropy

PAD, BOS, EOS = 0, 2, 3
ATTENTIONS = ["bahdanau", "dot", "general"]


def make_model(attention: str = "bahdanau", seed: int = 0, **kwargs) -> Seq2Seq:
    """A tiny model in eval mode; 'dot' needs a unidirectional encoder (matching sizes)."""
    torch.manual_seed(seed)
    options = dict(emb_size=8, hidden_size=16, dropout=0.0, attention=attention, bidirectional=attention != "dot")
    options.update(kwargs)
    return Seq2Seq(src_vocab_size=13, tgt_vocab_size=11, **options).eval()


def make_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """src (4, 7) with lengths 7,5,3,1 and tgt (4, 6) = <bos> w.. <eos> pad.., unsorted lengths."""
    g = torch.Generator().manual_seed(seed)
    src_lengths = torch.tensor([5, 7, 1, 3])
    tgt_lengths = torch.tensor([4, 6, 3, 2])  # counts <bos> and <eos>
    src = torch.randint(4, 13, (4, 7), generator=g)
    tgt = torch.randint(4, 11, (4, 6), generator=g)
    for i in range(4):
        src[i, src_lengths[i] :] = PAD
        tgt[i, 0] = BOS
        tgt[i, tgt_lengths[i] - 1] = EOS
        tgt[i, tgt_lengths[i] :] = PAD
    return src, src_lengths, tgt


# -- attention ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_attention_weights_sum_to_one_and_are_zero_on_padding(kind: str) -> None:
    torch.manual_seed(0)
    attention = BahdanauAttention(6, 6, 5) if kind == "bahdanau" else LuongAttention(6, 6, score=kind)
    query, keys = torch.randn(3, 4, 6) * 0.5, torch.randn(3, 7, 6) * 0.5
    lengths = torch.tensor([7, 2, 4])
    mask = (torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(1)
    context, weights = attention(query, keys, mask)
    assert context.shape == (3, 4, 6) and weights.shape == (3, 4, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    padded = ~mask.expand(-1, 4, -1)
    assert torch.all(weights[padded] == 0.0)  # exactly zero, not merely small
    assert torch.all(weights[~padded] > 0.0)
    # The context is the weighted mean of the real keys only.
    torch.testing.assert_close(context[1], weights[1, :, :2] @ keys[1, :2])


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_model_attention_is_zero_on_padded_source(kind: str) -> None:
    model = make_model(kind)
    src, src_lengths, tgt = make_batch()
    _, attention = model(src, src_lengths, tgt[:, :-1], return_attention=True)
    assert attention.shape == (4, 5, 7)
    torch.testing.assert_close(attention.sum(-1), torch.ones(4, 5))
    for i, length in enumerate(src_lengths.tolist()):
        assert torch.all(attention[i, :, length:] == 0.0)


def test_attention_rejects_bad_mask_and_dot_size_mismatch() -> None:
    attention = LuongAttention(6, 6, score="dot")
    with pytest.raises(ValueError, match="mask"):
        attention(torch.randn(2, 1, 6), torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_size"):
        LuongAttention(8, 6, score="dot")
    with pytest.raises(ValueError, match="attention"):
        Seq2Seq(10, 10, attention="dot", bidirectional=True, emb_size=4, hidden_size=8)


# -- padding invariance ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"attention": "bahdanau"},
        {"attention": "dot"},
        {"attention": "general", "enc_layers": 2, "dec_layers": 2},
        {"attention": "bahdanau", "input_feeding": False, "tie_embeddings": True},
    ],
    ids=["bahdanau", "dot", "general-2layers", "no-feeding-tied"],
)
def test_extra_padding_changes_nothing_on_real_positions(options: dict) -> None:
    model = make_model(**options)
    src, src_lengths, tgt = make_batch()
    logits = model(src, src_lengths, tgt[:, :-1])
    loss, n = masked_cross_entropy(logits, tgt[:, 1:], PAD)

    src_wide = F.pad(src, (0, 4), value=PAD)
    tgt_wide = F.pad(tgt, (0, 3), value=PAD)
    logits_wide = model(src_wide, src_lengths, tgt_wide[:, :-1])
    loss_wide, n_wide = masked_cross_entropy(logits_wide, tgt_wide[:, 1:], PAD)

    assert logits_wide.shape == (4, 8, 11)
    real = tgt[:, 1:] != PAD
    torch.testing.assert_close(logits_wide[:, :5][real], logits[real], rtol=1e-5, atol=1e-6)
    assert int(n_wide) == int(n) == int(real.sum())
    torch.testing.assert_close(loss_wide, loss, rtol=1e-5, atol=1e-6)


# -- shape checks ------------------------------------------------------------------------


def test_forward_rejects_mismatched_shapes_naming_the_argument() -> None:
    model = make_model()
    src, src_lengths, tgt = make_batch()
    with pytest.raises(ValueError, match=r"src_lengths.*\(4,\).*\(3,\)"):
        model(src, src_lengths[:3], tgt)
    with pytest.raises(ValueError, match=r"tgt_in.*\(4, 7\).*\(2, 6\)"):
        model(src, src_lengths, tgt[:2])
    with pytest.raises(ValueError, match=r"src: .*\(7,\)"):
        model(src[0], src_lengths, tgt)
    with pytest.raises(ValueError, match=r"src_lengths: values must lie in 1\.\.7"):
        model(src, src_lengths + 3, tgt)
    with pytest.raises(ValueError, match=r"src_lengths: values"):
        model(src, src_lengths * 0, tgt)
    memory, state = model.encode(src, src_lengths)
    with pytest.raises(ValueError, match=r"prev_tokens.*\(4,\).*\(4, 1\)"):
        model.decode_step(tgt[:, :1], memory, state)


# -- search ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_beam_size_one_equals_greedy_exactly(kind: str) -> None:
    for seed in range(3):
        model = make_model(kind, seed=seed)
        src, src_lengths, _ = make_batch(seed)
        greedy, attention = greedy_search(model, src, src_lengths, max_len=9)
        for alpha in (0.0, 1.0):
            beam = beam_search(model, src, src_lengths, beam_size=1, length_penalty=alpha, max_len=9)
            assert torch.equal(beam, greedy)
        assert attention.shape == (*greedy.shape, 7)


def test_search_output_format() -> None:
    model = make_model(seed=3)
    src, src_lengths, _ = make_batch()
    # Bias the model towards <eos> so that sentences end at different steps.
    with torch.no_grad():
        model.decoder.output_layer.bias[EOS] += 1.5
    greedy, attention = greedy_search(model, src, src_lengths, max_len=12)
    beam = beam_search(model, src, src_lengths, beam_size=4, length_penalty=1.0, max_len=12)
    for tokens in (greedy, beam):
        assert tokens.dtype == torch.long and tokens.size(0) == 4 and tokens.size(1) <= 12
        assert not torch.any(tokens == BOS)
        for row in tokens.tolist():
            if EOS in row:
                end = row.index(EOS)
                assert all(t == PAD for t in row[end + 1 :])
    # Attention rows of real positions sum to 1, rows after <eos> are all zero.
    for i, row in enumerate(greedy.tolist()):
        n = row.index(EOS) + 1 if EOS in row else len(row)
        torch.testing.assert_close(attention[i, :n].sum(-1), torch.ones(n))
        assert torch.all(attention[i, n:] == 0)
        assert torch.all(attention[i, :, src_lengths[i] :] == 0)


def sequence_log_prob(
    model: Seq2Seq, src: torch.Tensor, src_lengths: torch.Tensor, seqs: list[list[int]]
) -> torch.Tensor:
    """Log-probability of each token sequence (no <bos>) given one source sentence (1, src_len)."""
    width = max(len(s) for s in seqs)
    tgt = torch.full((len(seqs), width + 1), PAD)
    tgt[:, 0] = BOS
    for i, s in enumerate(seqs):
        tgt[i, 1 : len(s) + 1] = torch.tensor(s)
    n = len(seqs)
    with torch.no_grad():
        logits = model(src.expand(n, -1), src_lengths.expand(n), tgt[:, :-1])
    log_probs = torch.log_softmax(logits, -1).gather(2, tgt[:, 1:].unsqueeze(2)).squeeze(2)
    lengths = torch.tensor([len(s) for s in seqs])
    return (log_probs * (torch.arange(width) < lengths.unsqueeze(1))).sum(1)


def test_wide_beam_finds_the_exhaustive_optimum() -> None:
    # With beam_size >= V^(max_len-1) and no length penalty, beam search is exact search.
    model = Seq2Seq(9, 5, emb_size=6, hidden_size=8, dropout=0.0, attention="general").eval()
    with torch.no_grad():
        model.decoder.output_layer.bias.copy_(torch.tensor([0.0, 0.2, 0.1, 0.4, 0.3]))
    vocab, max_len = 5, 3
    src, src_lengths, _ = make_batch()
    src = src.clamp(max=8)
    beam = beam_search(model, src, src_lengths, beam_size=vocab ** (max_len - 1), length_penalty=0.0, max_len=max_len)
    candidates = [
        list(s[: s.index(EOS) + 1]) if EOS in s else list(s)
        for s in itertools.product(range(vocab), repeat=max_len)
    ]
    candidates = [list(c) for c in {tuple(c) for c in candidates}]
    for i in range(src.size(0)):
        scores = sequence_log_prob(model, src[i : i + 1], src_lengths[i : i + 1], candidates)
        row = beam[i].tolist()
        found = row[: row.index(EOS) + 1] if EOS in row else row
        found_score = sequence_log_prob(model, src[i : i + 1], src_lengths[i : i + 1], [found])[0]
        assert found_score >= scores.max() - 1e-5
        assert found in candidates


# -- losses ------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_masked_cross_entropy_is_the_mean_over_real_tokens(smoothing: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    target = torch.tensor([[4, 5, 6, 3, 0], [1, 3, 0, 0, 0], [6, 6, 6, 6, 3]])
    loss_sum, n_tokens = masked_cross_entropy(logits, target, pad_index=0, label_smoothing=smoothing)
    terms = []
    for b in range(3):
        for t in range(5):
            if target[b, t] == 0:
                continue
            log_p = torch.log_softmax(logits[b, t], -1)
            terms.append(-(1 - smoothing) * log_p[target[b, t]] - smoothing * log_p.mean())
    assert int(n_tokens) == len(terms) == 11
    torch.testing.assert_close(loss_sum / n_tokens, torch.stack(terms).mean())
    # Changing logits on padded positions changes nothing.
    logits2 = logits.clone()
    logits2[target == 0] = 100.0
    torch.testing.assert_close(masked_cross_entropy(logits2, target, 0, smoothing)[0], loss_sum)
    with pytest.raises(ValueError, match="logits"):
        masked_cross_entropy(logits[:, :4], target, 0)


# -- model options -----------------------------------------------------------------------


def test_tied_embeddings_share_the_weight_and_params_count() -> None:
    tied = Seq2Seq(10, 12, emb_size=6, hidden_size=8, tie_embeddings=True)
    untied = Seq2Seq(10, 12, emb_size=6, hidden_size=8)
    assert tied.decoder.output_layer.weight is tied.decoder.embed.weight
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Tying removes the 12x8 output matrix and adds an 8->6 projection.
    assert count(untied) - count(tied) == 12 * 8 - 8 * 6


@pytest.mark.parametrize("scheme", ["default", "xavier_uniform", "kaiming_normal", "orthogonal"])
def test_init_schemes_keep_padding_rows_zero(scheme: str) -> None:
    model = Seq2Seq(10, 12, emb_size=6, hidden_size=8, init=scheme)
    assert torch.all(model.src_embed.weight[PAD] == 0)
    assert torch.all(model.decoder.embed.weight[PAD] == 0)
    src, src_lengths, tgt = make_batch()
    assert torch.isfinite(model.eval()(src.clamp(max=9), src_lengths, tgt[:, :-1])).all()


def test_teacher_forcing_zero_feeds_back_predictions() -> None:
    model = make_model(teacher_forcing=0.0).train()  # dropout is 0, so train mode is deterministic
    src, src_lengths, tgt = make_batch()
    logits = model(src, src_lengths, tgt[:, :-1])
    greedy, _ = greedy_search(model.eval(), src, src_lengths, max_len=5)
    # Each step consumed the previous argmax, which is exactly greedy decoding.
    for i, row in enumerate(greedy.tolist()):
        n = row.index(EOS) + 1 if EOS in row else len(row)
        assert logits[i, :n].argmax(-1).tolist() == row[:n]
    # In eval mode the gold tokens are used (loss on validation stays teacher-forced).
    torch.testing.assert_close(model.eval()(src, src_lengths, tgt[:, :-1]), make_model()(src, src_lengths, tgt[:, :-1]))


# -- learning ----------------------------------------------------------------------------


def reversal_corpus(n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """n sentence pairs over 10 words: the target is the source reversed."""
    g = torch.Generator().manual_seed(seed)
    sentences = [torch.randint(4, 14, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g) for _ in range(n)]
    src = torch.full((n, 6), PAD)
    tgt = torch.full((n, 8), PAD)
    for i, s in enumerate(sentences):
        src[i, : len(s)] = s
        tgt[i, : len(s) + 2] = torch.cat([torch.tensor([BOS]), s.flip(0), torch.tensor([EOS])])
    lengths = torch.tensor([len(s) for s in sentences])
    references = [" ".join(f"w{t}" for t in s.flip(0).tolist()) for s in sentences]
    return src, lengths, tgt, references


def detok(tokens: torch.Tensor) -> list[str]:
    """Token rows (batch, len) -> 'wN wM ...' strings, cut at <eos>."""
    out = []
    for row in tokens.tolist():
        row = row[: row.index(EOS)] if EOS in row else row
        out.append(" ".join(f"w{t}" for t in row))
    return out


def test_small_model_overfits_a_reversal_corpus_to_bleu_above_90() -> None:
    torch.manual_seed(0)
    src, lengths, tgt, references = reversal_corpus()
    model = Seq2Seq(14, 14, emb_size=32, hidden_size=64, dropout=0.0, attention="bahdanau")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        loss_sum, n = masked_cross_entropy(model(src, lengths, tgt[:, :-1]), tgt[:, 1:], PAD)
        loss = loss_sum / n
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05
    model.eval()
    greedy, _ = greedy_search(model, src, lengths, max_len=10)
    beam = beam_search(model, src, lengths, beam_size=3, length_penalty=1.0, max_len=10)
    for tokens in (greedy, beam):
        bleu = sacrebleu.corpus_bleu(detok(tokens), [references], lowercase=True)
        assert bleu.score > 90, (bleu.score, detok(tokens)[:3], references[:3])
    assert math.isclose(
        sacrebleu.corpus_bleu(detok(greedy), [references]).score,
        sacrebleu.corpus_bleu(detok(beam_search(model, src, lengths, 1, 1.0, 10)), [references]).score,
    )
