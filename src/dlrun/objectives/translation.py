"""LightningModule for translation: masked cross-entropy, perplexity, BLEU, attention samples."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from sacrebleu.metrics import BLEU
from torch import Tensor, nn

from dlrun._upstream import lightning_attached_trainer
from dlrun.callbacks.progress import bar_shows_metrics, step_is_shown
from dlrun.contracts import RunContext
from dlrun.models.search import beam_search, greedy_search
from dlrun.objectives.base import NetworkObjective
from dlrun.objectives.losses import masked_cross_entropy
from dlrun.objectives.optim import OptimizerFactory, SchedulerFactory

DecodeMethod = Literal["greedy", "beam"]


class TranslationModule(NetworkObjective):
    """Train a Seq2Seq-like network on ``TextBatch``es; report loss, perplexity and BLEU.

    Batches carry ``src (batch, src_len)``, ``src_lengths (batch,)``, ``tgt (batch, tgt_len)``
    (``<bos> w... <eos>`` then padding) and ``ids (batch,)`` (indices into the split). The
    datamodule supplies ``references(split)``, ``detokenize``, ``tgt_vocab`` and ``src_vocab``
    (``decode``, and ``itos`` for sample labels) for BLEU and samples. ``monitor``/``mode``
    name the metric that checkpointing, early stopping and LR plateau schedules follow.
    """

    throughput_unit = "tokens"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        max_decode_len: int = 80,
        decode: DecodeMethod = "beam",
        val_decode: DecodeMethod = "greedy",
        num_samples: int = 8,
        monitor: str = "val/bleu",
        mode: Literal["min", "max"] = "max",
    ) -> None:
        super().__init__(net, optimizer, scheduler, monitor, mode, label_smoothing)
        for name, value in (("decode", decode), ("val_decode", val_decode)):
            if value not in ("greedy", "beam"):
                raise ValueError(f"{name}: expected 'greedy' or 'beam', got {value!r}")
        floors = (("beam_size", beam_size, 1), ("max_decode_len", max_decode_len, 1), ("num_samples", num_samples, 0))
        for name, value, least in floors:
            if value < least:
                raise ValueError(f"{name}: must be >= {least}, got {value}")
        if length_penalty < 0:
            raise ValueError(f"length_penalty: must be >= 0, got {length_penalty}")
        # Only plain data goes into the checkpoint's hyper_parameters (loadable with weights_only=True).
        self.save_hyperparameters(ignore=self.IGNORED)
        self.pad_index: int = getattr(net, "pad_index", 0)
        self.bleu_signature: str | None = None
        self.samples: list[dict[str, Any]] = []
        self._eval: dict[str, Any] = {}

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (batch, tgt_len, tgt_vocab) for tgt_in (batch, tgt_len)."""
        return self.net(src, src_lengths, tgt_in)

    def translate(self, src: Tensor, src_lengths: Tensor, method: DecodeMethod | None = None) -> Tensor:
        """Translate src (batch, src_len) -> tokens (batch, out_len), no <bos>, padded after <eos>.

        method defaults to the ``decode`` hyperparameter.
        """
        method = method or self.hparams.decode
        max_len = self.hparams.max_decode_len
        if method == "greedy":
            return greedy_search(self.net, src, src_lengths, max_len)[0]
        if method == "beam":
            return beam_search(self.net, src, src_lengths, self.hparams.beam_size, self.hparams.length_penalty, max_len)
        raise ValueError(f"method: expected 'greedy' or 'beam', got {method!r}")

    def predict_lines(self, lines: list[str], datamodule: Any) -> list[str]:
        """Translate each source line (``task=predict``), in order, with the ``decode`` method."""
        translations = [""] * len(lines)
        with torch.no_grad():
            for batch in datamodule.source_batches(lines):
                tokens = self.translate(batch.src.to(self.device), batch.src_lengths.to(self.device))
                for row, line in enumerate(batch.ids.tolist()):
                    translations[line] = datamodule.decode_target(tokens[row])
        return translations

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """Attention heatmaps and samples per validation epoch; the BLEU signature as a tag after evaluation."""
        from dlrun.callbacks.translation_samples import BleuSignatureTag, TranslationSamples

        return [TranslationSamples(run.output_dir, publish=run.publish), BleuSignatureTag(run.set_tags)]

    def example_input(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``forward``'s arguments for a batch (for shape summaries): src, src_lengths, tgt_in."""
        return batch.src, batch.src_lengths, batch.tgt[:, :-1]

    def count_units(self, batch: Any) -> Tensor:
        """Real target tokens predicted in a batch (a device tensor), for throughput."""
        return (batch.tgt[:, 1:] != self.pad_index).sum()

    # -- training -------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Token-averaged (label-smoothed) cross-entropy of one batch."""
        logits = self.net(batch.src, batch.src_lengths, batch.tgt[:, :-1])
        loss_sum, n_tokens = masked_cross_entropy(
            logits, batch.tgt[:, 1:], self.pad_index, self.hparams.label_smoothing
        )
        loss = loss_sum / n_tokens.clamp(min=1)
        trainer = lightning_attached_trainer(self)
        if trainer is None or step_is_shown(trainer, batch_idx):
            self.log(
                "train/loss",
                loss,
                on_step=True,
                on_epoch=False,
                prog_bar=bar_shows_metrics(trainer),
                batch_size=batch.src.size(0),
            )
        # Lightning's epoch mean weighted by batch_size=total is sum(pad) / sum(total) over the epoch:
        # it accumulates on the device (no host sync per step) and is ready before epoch-end callbacks.
        pad = (batch.src == self.pad_index).sum() + (batch.tgt == self.pad_index).sum()
        total = batch.src.numel() + batch.tgt.numel()
        self.log("train/pad_fraction", pad / total, on_step=False, on_epoch=True, batch_size=total, sync_dist=True)
        return loss

    # -- validation and test --------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        """Reset the split's accumulators."""
        self._reset_eval()

    def on_test_epoch_start(self) -> None:
        """Reset the split's accumulators."""
        self._reset_eval()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Accumulate loss and greedy (``val_decode``) translations of one batch."""
        self._evaluate(batch, self.hparams.val_decode, keep_samples=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Accumulate loss and (``decode``) translations of one batch; greedy ones too when decoding by beam."""
        self._evaluate(batch, self.hparams.decode, keep_samples=False, also_greedy=self.hparams.decode != "greedy")

    def on_validation_epoch_end(self) -> None:
        """Log ``val/loss``, ``val/ppl``, ``val/bleu``; keep attention samples in ``self.samples``."""
        self._finish_eval("val", keep_samples=True)

    def on_test_epoch_end(self) -> None:
        """Log ``test/loss``, ``test/ppl``, ``test/bleu`` (and ``test/bleu_greedy`` when decoding by beam)."""
        self._finish_eval("test", keep_samples=False)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Translate a batch: ``{"ids": (batch,), "tokens": (batch, out_len)}`` by ``decode``."""
        return {"ids": batch.ids, "tokens": self.translate(batch.src, batch.src_lengths)}

    # -- helpers --------------------------------------------------------------------------

    def _reset_eval(self) -> None:
        # float32, not float64: MPS has no float64, and split-sized sums fit float32 well enough.
        zero = torch.zeros((), device=self.device)
        self._eval = {
            "loss": zero,
            "nll": zero.clone(),
            "tokens": zero.clone(),
            "hyps": [],
            "greedy": [],
            "samples": [],
        }

    def _evaluate(self, batch: Any, method: DecodeMethod, keep_samples: bool, also_greedy: bool = False) -> None:
        """Add one batch's summed loss, token count and hypotheses to the accumulators."""
        logits = self.net(batch.src, batch.src_lengths, batch.tgt[:, :-1])
        target = batch.tgt[:, 1:]
        loss_sum, n_tokens = masked_cross_entropy(logits, target, self.pad_index, self.hparams.label_smoothing)
        self._eval["loss"] += loss_sum.float()
        self._eval["tokens"] += n_tokens.float()
        if self.hparams.label_smoothing > 0:
            # Perplexity is defined by the plain likelihood, not by the smoothed training loss.
            nll_sum, _ = masked_cross_entropy(logits, target, self.pad_index)
            self._eval["nll"] += nll_sum.float()
        else:
            self._eval["nll"] += loss_sum.float()

        tokens = self.translate(batch.src, batch.src_lengths, method)
        ids = batch.ids.tolist()
        self._eval["hyps"].extend(zip(ids, tokens.cpu().tolist(), strict=True))
        if also_greedy:
            greedy = self.translate(batch.src, batch.src_lengths, "greedy")
            self._eval["greedy"].extend(zip(ids, greedy.cpu().tolist(), strict=True))
        if keep_samples:
            rows = [i for i, example_id in enumerate(ids) if example_id < self.hparams.num_samples]
            if rows:
                self._eval["samples"].extend(self._attention_samples(batch, tokens, rows))

    def _attention_samples(self, batch: Any, tokens: Tensor, rows: list[int]) -> list[dict[str, Any]]:
        """Attention of the model over its own hypotheses for the given batch rows.

        Forcing the hypothesis through the decoder reproduces the attention of greedy
        search exactly, and gives beam hypotheses their attention too.
        """
        index = torch.tensor(rows, device=tokens.device)
        hyp = tokens.index_select(0, index)
        bos = hyp.new_full((len(rows), 1), self.net.bos_index)
        # src_lengths stay on the host (TextDataModule.transfer_batch_to_device); index them there.
        src, lengths = (
            batch.src.index_select(0, index),
            batch.src_lengths.index_select(0, index.to(batch.src_lengths.device)),
        )
        _, attention = self.net(src, lengths, torch.cat([bos, hyp], dim=1), return_attention=True)
        out = []
        for k, row in enumerate(rows):
            hyp_ids = hyp[k].tolist()
            # Rows up to and including <eos> (or all rows when max_decode_len cut it off).
            n_rows = hyp_ids.index(self.net.eos_index) + 1 if self.net.eos_index in hyp_ids else len(hyp_ids)
            n_cols = int(lengths[k])
            out.append(
                {
                    "id": int(batch.ids[row]),
                    "src_ids": src[k, :n_cols].tolist(),
                    "hyp_ids": hyp_ids[:n_rows],
                    "attention": attention[k, :n_rows, :n_cols].float().cpu(),
                }
            )
        return out

    def _reduce_sum(self, value: Tensor) -> Tensor:
        """Sum a tensor over all processes (identity on one)."""
        return self.trainer.strategy.reduce(value, reduce_op="sum") if self.trainer.world_size > 1 else value

    def _finish_eval(self, split: str, keep_samples: bool) -> None:
        """Log split-level loss, perplexity and BLEU from the accumulated sums and hypotheses."""
        if not self._eval:
            return
        # Every rank takes part in the collectives, even one that saw no batch.
        loss = self._reduce_sum(self._eval["loss"])
        nll = self._reduce_sum(self._eval["nll"])
        n_tokens = self._reduce_sum(self._eval["tokens"])
        hyps = dict(_gather(self._eval["hyps"]))  # id -> tokens; dict drops DDP's repeated ids
        samples = {sample["id"]: sample for sample in _gather(self._eval["samples"])} if keep_samples else {}
        if not hyps:
            return
        self.log(f"{split}/loss", loss / n_tokens)
        self.log(f"{split}/ppl", torch.exp(nll / n_tokens))

        dm = self._datamodule()
        references = dm.references(split)
        self.log(f"{split}/bleu", self._bleu(hyps, references, dm))
        greedy = dict(_gather(self._eval["greedy"]))
        if greedy:
            self.log(f"{split}/bleu_greedy", self._bleu(greedy, references, dm))

        if keep_samples:
            self.samples = [self._describe(samples[i], dm, references) for i in sorted(samples)]

    def _bleu(self, hyps: dict[int, list[int]], references: list[str], dm: Any) -> Tensor:
        """Corpus BLEU (sacrebleu, lowercased) of detokenized hypotheses against the raw references."""
        ids = sorted(hyps)
        hypotheses = [dm.detokenize(dm.tgt_vocab.decode(hyps[i])) for i in ids]
        metric = BLEU(lowercase=True)
        score = metric.corpus_score(hypotheses, [[references[i] for i in ids]])
        self.bleu_signature = str(metric.get_signature())
        return torch.tensor(score.score, dtype=torch.float32, device=self.device)

    def _describe(self, sample: dict[str, Any], dm: Any, references: list[str]) -> dict[str, Any]:
        """Turn a raw sample (ids, attention) into tokens and text for plots."""
        return {
            "id": sample["id"],
            "source_tokens": _labels(dm.src_vocab, sample["src_ids"]),
            "hypothesis_tokens": _labels(dm.tgt_vocab, sample["hyp_ids"]),
            "attention": sample["attention"],
            "hypothesis": dm.detokenize(dm.tgt_vocab.decode(sample["hyp_ids"])),
            "reference": references[sample["id"]],
        }

    def _datamodule(self) -> Any:
        """The trainer's datamodule, checked for what BLEU and samples need."""
        dm = getattr(self.trainer, "datamodule", None)
        missing = [name for name in ("references", "detokenize", "tgt_vocab") if not hasattr(dm, name)]
        if missing:
            raise RuntimeError(
                f"TranslationModule: the trainer's datamodule ({type(dm).__name__}) lacks {', '.join(missing)}; "
                "pass a text datamodule to trainer.fit/validate/test"
            )
        return dm


def _labels(vocab: Any, ids: list[int]) -> list[str]:
    """One token per id, specials included, so labels line up with attention rows/columns."""
    itos = getattr(vocab, "itos", None)
    if itos is not None:
        return [itos[i] for i in ids]
    # Without an id->token table, decode (which stops at <eos>) and label the rest <eos>.
    tokens = list(vocab.decode(ids))[: len(ids)]
    return tokens + ["<eos>"] * (len(ids) - len(tokens))


def _gather(items: list[Any]) -> list[Any]:
    """Concatenate a picklable list across processes (identity on one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in (part or [])]
