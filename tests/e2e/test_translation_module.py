"""TranslationModule with Lightning: metric names and values, BLEU, samples, checkpoints."""

from __future__ import annotations

import functools
import math

import pytest
import pytorch_lightning as pl
import sacrebleu
import torch
from torch.utils.data import DataLoader

from dlrun.data.text_batching import TextBatch
from dlrun.data.vocab import Vocabulary
from dlrun.models.seq2seq import Seq2Seq
from dlrun.objectives.losses import masked_cross_entropy
from dlrun.objectives.translation import TranslationModule

PAD, BOS, EOS = 0, 2, 3
WORDS = ["<pad>", "<unk>", "<bos>", "<eos>"] + [f"W{i}" for i in range(10)]


class CopyData(pl.LightningDataModule):
    """Copy task over 10 words, batched like the text data module (src ends in <eos>).

    References are lower-case, hypotheses upper-case: BLEU must lowercase to match them.
    """

    def __init__(self, n_train: int = 24, n_val: int = 10, batch_size: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)

        def sentence() -> list[int]:
            length = int(torch.randint(2, 6, (1,), generator=g))
            return torch.randint(4, 14, (length,), generator=g).tolist()

        self.splits = {
            name: [sentence() for _ in range(n)] for name, n in (("train", n_train), ("val", n_val), ("test", n_val))
        }
        self.batch_size = batch_size
        self.src_vocab = self.tgt_vocab = Vocabulary(WORDS)

    def references(self, split: str) -> list[str]:
        return [" ".join(WORDS[i] for i in s).lower() for s in self.splits[split]]

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def _collate(self, items: list[tuple[int, list[int]]]) -> TextBatch:
        n, width = len(items), max(len(s) for _, s in items)
        src = torch.full((n, width + 1), PAD)
        tgt = torch.full((n, width + 2), PAD)
        for k, (_, s) in enumerate(items):
            src[k, : len(s) + 1] = torch.tensor([*s, EOS])
            tgt[k, : len(s) + 2] = torch.tensor([BOS, *s, EOS])
        lengths = torch.tensor([len(s) + 1 for _, s in items])
        return TextBatch(src, lengths, tgt, torch.tensor([i for i, _ in items]))

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(list(enumerate(self.splits[split])), batch_size=self.batch_size, collate_fn=self._collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def make_module(**kwargs) -> TranslationModule:
    torch.manual_seed(0)
    net = Seq2Seq(14, 14, emb_size=16, hidden_size=32, dropout=0.0)
    options = dict(beam_size=3, max_decode_len=10, num_samples=3)
    options.update(kwargs)
    return TranslationModule(net, functools.partial(torch.optim.Adam, lr=0.01), **options)


def make_trainer(max_epochs: int = 2, sanity_steps: int = 0) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=sanity_steps,
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[TranslationModule, CopyData, pl.Trainer]:
    module, data = make_module(label_smoothing=0.1), CopyData()
    trainer = make_trainer(max_epochs=3)
    trainer.fit(module, datamodule=data)
    return module, data, trainer


def manual_eval(module: TranslationModule, data: CopyData, split: str) -> dict[str, float]:
    """Loss, perplexity and BLEU recomputed by hand over a whole split."""
    module.eval()
    loss_sum = nll_sum = n_tokens = 0.0
    hypotheses = []
    method = module.hparams.val_decode if split == "val" else module.hparams.decode
    with torch.no_grad():
        for batch in data._loader(split):
            logits = module.net(batch.src, batch.src_lengths, batch.tgt[:, :-1])
            target = batch.tgt[:, 1:]
            s, n = masked_cross_entropy(logits, target, PAD, module.hparams.label_smoothing)
            loss_sum, n_tokens = loss_sum + float(s), n_tokens + float(n)
            log_p = torch.log_softmax(logits, -1).gather(2, target.unsqueeze(2)).squeeze(2)
            nll_sum -= float((log_p * (target != PAD)).sum())
            tokens = module.translate(batch.src, batch.src_lengths, method)
            hypotheses += [" ".join(data.tgt_vocab.decode(row)) for row in tokens.tolist()]
    bleu = sacrebleu.corpus_bleu(hypotheses, [data.references(split)], lowercase=True).score
    return {"loss": loss_sum / n_tokens, "ppl": math.exp(nll_sum / n_tokens), "bleu": bleu}


def test_fit_logs_all_metrics_with_split_level_values(fitted) -> None:
    module, data, trainer = fitted
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for name in ("train/loss", "train/pad_fraction", "val/loss", "val/ppl", "val/bleu"):
        assert name in metrics, sorted(metrics)
    expected = manual_eval(module, data, "val")
    assert metrics["val/loss"] == pytest.approx(expected["loss"], rel=1e-5)
    # Perplexity is exp of the plain (unsmoothed) token-averaged NLL over the split.
    assert metrics["val/ppl"] == pytest.approx(expected["ppl"], rel=1e-5)
    assert metrics["val/ppl"] < math.exp(metrics["val/loss"])
    assert metrics["val/bleu"] == pytest.approx(expected["bleu"], abs=1e-4)
    assert "case:lc" in module.bleu_signature


def test_pad_fraction_counts_src_and_tgt_padding_of_the_epoch(fitted) -> None:
    _, data, trainer = fitted
    pad = total = 0
    for batch in data.train_dataloader():
        pad += int((batch.src == PAD).sum() + (batch.tgt == PAD).sum())
        total += batch.src.numel() + batch.tgt.numel()
    assert pad > 0
    assert float(trainer.callback_metrics["train/pad_fraction"]) == pytest.approx(pad / total)


def test_samples_hold_the_first_val_ids_with_aligned_attention(fitted) -> None:
    module, data, _ = fitted
    assert [s["id"] for s in module.samples] == [0, 1, 2]
    references = data.references("val")
    for sample in module.samples:
        assert set(sample) == {"id", "source_tokens", "hypothesis_tokens", "attention", "hypothesis", "reference"}
        attention = torch.as_tensor(sample["attention"])
        assert attention.shape == (len(sample["hypothesis_tokens"]), len(sample["source_tokens"]))
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.size(0)))
        assert sample["source_tokens"] == [WORDS[i] for i in data.splits["val"][sample["id"]]] + ["<eos>"]
        assert sample["reference"] == references[sample["id"]]
        words = [t for t in sample["hypothesis_tokens"] if t not in ("<eos>", "<pad>", "<bos>")]
        assert sample["hypothesis"] == " ".join(words)


def test_test_split_uses_beam_search_and_logs_test_metrics(fitted) -> None:
    module, data, trainer = fitted
    results = trainer.test(module, datamodule=data, verbose=False)[0]
    assert set(results) >= {"test/loss", "test/ppl", "test/bleu"}
    expected = manual_eval(module, data, "test")
    assert results["test/ppl"] == pytest.approx(expected["ppl"], rel=1e-5)
    assert results["test/bleu"] == pytest.approx(expected["bleu"], abs=1e-4)


def test_checkpoint_loads_with_weights_only(fitted, tmp_path) -> None:
    _, _, trainer = fitted
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["beam_size"] == 3
    assert not {"net", "optimizer", "scheduler"} & set(checkpoint["hyper_parameters"])
    restored = make_module()
    restored.load_state_dict(checkpoint["state_dict"])


def test_training_memorizes_the_copy_task() -> None:
    module, data = make_module(val_decode="beam"), CopyData()
    # Validate on training sentences: 24 pairs are too few to generalize, but enough to memorize.
    data.splits["val"] = data.splits["train"][:10]
    trainer = make_trainer(max_epochs=15, sanity_steps=2)  # sanity check: partial split, BLEU still works
    trainer.fit(module, datamodule=data)
    assert float(trainer.callback_metrics["val/bleu"]) > 80
    assert float(trainer.callback_metrics["train/loss"]) < 0.3


def test_summary_input_and_run_tags(fitted) -> None:
    from pytorch_lightning.utilities.model_summary import ModelSummary

    module, data, _ = fitted
    assert module.bleu_signature.startswith("nrefs:1|case:lc|eff:no|tok:13a")
    assert make_module().bleu_signature is None
    module.example_input_array = module.example_input(next(iter(data.train_dataloader())))
    try:
        summary = ModelSummary(module, max_depth=-1)
        assert "decoder.attention" in str(summary)
        assert summary.total_parameters == sum(p.numel() for p in module.parameters())
    finally:
        module.example_input_array = None


def test_translate_and_argument_checks() -> None:
    module, data = make_module(), CopyData()
    batch = next(iter(data.val_dataloader()))
    module.eval()
    greedy = module.translate(batch.src, batch.src_lengths, "greedy")
    beam = module.translate(batch.src, batch.src_lengths)  # decode="beam" by default
    assert greedy.size(0) == beam.size(0) == 4
    with pytest.raises(ValueError, match="method"):
        module.translate(batch.src, batch.src_lengths, "sample")
    with pytest.raises(ValueError, match="val_decode"):
        make_module(val_decode="sampling")
    with pytest.raises(ValueError, match="label_smoothing"):
        make_module(label_smoothing=1.0)
    with pytest.raises(ValueError, match="mode"):
        make_module(mode="up")


def test_plateau_schedule_watches_the_objective_monitor() -> None:
    # The plateau's mode comes from objective.mode, so it must watch objective.monitor (val/bleu, max),
    # not val/loss: a max-mode plateau on a falling loss would halve the LR every other epoch.
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max")
    config = make_module(scheduler=plateau).configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val/bleu"
    config = make_module(scheduler=plateau, monitor="val/loss", mode="min").configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val/loss"
