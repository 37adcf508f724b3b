"""Objective for recurrent language models: next-token cross-entropy, perplexity, stateful (truncated BPTT) training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from dlrun._upstream import lightning_attached_trainer
from dlrun.callbacks.progress import bar_shows_metrics, step_is_shown
from dlrun.contracts import RunContext
from dlrun.data.tokenizer import WordTokenizer
from dlrun.models.lm_sampling import continue_prompt
from dlrun.models.rnn_lm import detach_state
from dlrun.objectives.base import NetworkObjective
from dlrun.objectives.losses import masked_cross_entropy
from dlrun.objectives.optim import OptimizerFactory, SchedulerFactory

DEFAULT_PROMPTS = ("a man", "two dogs", "a little girl in a", "people are", "")
STATE_KEY = "dlrun_lm_state"
"""Checkpoint key of the carried training state: ``{"state": [tensors], "next": position}``."""


class LanguageModelObjective(NetworkObjective):
    """Train a ``(tokens, state) -> (logits, state)`` network on ``LMBatch`` windows; report perplexity.

    ``stateful=True``: each window starts from the state the previous window of the same rows ended
    in, detached, so gradients stop at the window boundary (truncated backpropagation through time).
    A window starts from zeros where it does not continue the saved state's position (``batch.start``
    differs): at every epoch's first window, since the data module starts every epoch at position 0.
    Validation and test carry their own state the same way, from zeros at the start of each pass.
    ``stateful=False``: every window starts from zeros.

    Loss and perplexity are per target token (all targets are real tokens; ``pad_index`` is ignored
    should any appear). Every validation epoch, ``run_callbacks`` samples continuations of ``prompts``
    (``temperature``, ``top_k``, at most ``max_new_tokens``) into ``samples/epoch_NNN.txt``.

    Resume: the carried training state and the position of the next window go into every checkpoint
    (``dlrun_lm_state``); a resumed run continues from it if its first window continues that position,
    else from zeros, exactly as an uninterrupted run would (``last.ckpt`` is written at epoch ends,
    and every epoch starts from zeros anyway).
    """

    throughput_unit = "tokens"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        pad_index: int = 0,
        eos_index: int = 3,
        stateful: bool = True,
        prompts: Sequence[str] = DEFAULT_PROMPTS,
        samples_per_prompt: int = 2,
        temperature: float = 0.8,
        top_k: int = 0,
        max_new_tokens: int = 30,
        sample_seed: int = 0,
        monitor: str = "val/ppl",
        mode: Literal["min", "max"] = "min",
    ) -> None:
        super().__init__(net, optimizer, scheduler, monitor, mode)
        if temperature < 0:
            raise ValueError(f"temperature: must be >= 0 (0: greedy), got {temperature}")
        if top_k < 0:
            raise ValueError(f"top_k: must be >= 0 (0: whole vocabulary), got {top_k}")
        if max_new_tokens < 1 or samples_per_prompt < 0:
            raise ValueError(
                f"max_new_tokens / samples_per_prompt: must be >= 1 / >= 0, got {max_new_tokens} / {samples_per_prompt}"
            )
        prompts = [str(p) for p in prompts]  # a plain list (not a ListConfig) in hyper_parameters: weights_only loads
        # Only plain data goes into the checkpoint's hyper_parameters (loadable with weights_only=True).
        self.save_hyperparameters(ignore=self.IGNORED)
        self.pad_index = pad_index
        self.eos_index = eos_index
        self.stateful = stateful
        # kind ("train", "val", "test") -> (detached state, position where the next window must start)
        self._states: dict[str, tuple[tuple[Tensor, ...], int]] = {}
        # Metrics, not sums logged at epoch end: Lightning computes them before epoch-end callbacks (the
        # epoch line, checkpointing) read them, and sums them across processes.
        self.train_ppl, self.val_ppl, self.test_ppl = Perplexity(), Perplexity(), Perplexity()

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Logits ``(batch, T, vocab)`` for tokens ``(batch, T)`` and the state after them."""
        return self.net(tokens, state)

    # -- the contract --------------------------------------------------------------------

    def example_input(self, batch: Any) -> tuple[Tensor]:
        """``forward``'s arguments for a batch: ``(tokens,)`` (zero state)."""
        return (batch.tokens,)

    def count_units(self, batch: Any) -> int:
        """Target tokens of a window, for throughput."""
        return batch.target.numel()

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """Sampled continuations of ``prompts`` under ``samples/`` after every validation epoch."""
        from dlrun.callbacks.lm_samples import LanguageModelSamples

        return [LanguageModelSamples(run.output_dir, publish=run.publish)] if self.hparams.samples_per_prompt else []

    def predict_lines(self, lines: list[str], datamodule: Any) -> list[str]:
        """Each line continued to the end of its sentence (or ``max_new_tokens``), prompt included."""
        return [text for _, text in self.continuations(lines, datamodule, 1)]

    # -- state ---------------------------------------------------------------------------

    def initial_state(self, kind: str, batch: Any) -> tuple[Tensor, ...] | None:
        """The state ``batch`` starts from: the saved one if stateful and ``batch`` continues it, else None (zeros)."""
        if not self.stateful or kind not in self._states:
            return None
        state, position = self._states[kind]
        if position != batch.start or state[0].size(1) != batch.tokens.size(0):
            return None
        return tuple(s.to(batch.tokens.device) for s in state)

    def _step(self, kind: str, batch: Any) -> tuple[Tensor, Tensor]:
        """Summed loss and target count of a window, carrying the state of ``kind``."""
        logits, state = self.net(batch.tokens, self.initial_state(kind, batch))
        if self.stateful:
            self._states[kind] = (detach_state(state), batch.start + batch.tokens.size(1))
        return masked_cross_entropy(logits, batch.target, self.pad_index)

    # -- training ------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Mean cross-entropy per target token of one window."""
        loss_sum, n_tokens = self._step("train", batch)
        loss = loss_sum / n_tokens.clamp(min=1)
        self.train_ppl.update(loss_sum, n_tokens)
        self.log("train/ppl", self.train_ppl, on_step=False, on_epoch=True)
        trainer = lightning_attached_trainer(self)
        if trainer is None or step_is_shown(trainer, batch_idx):
            self.log(
                "train/loss",
                loss,
                on_step=True,
                on_epoch=False,
                prog_bar=bar_shows_metrics(trainer),
                batch_size=batch.tokens.size(0),
            )
        return loss

    # -- validation and test -------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        """Evaluation starts from zeros."""
        self._states.pop("val", None)

    def on_test_epoch_start(self) -> None:
        """Evaluation starts from zeros."""
        self._states.pop("test", None)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Add the window to ``val/loss`` and ``val/ppl`` (over all validation targets)."""
        self._evaluate("val", batch, self.val_ppl)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Add the window to ``test/loss`` and ``test/ppl`` (over all test targets)."""
        self._evaluate("test", batch, self.test_ppl)

    def _evaluate(self, kind: str, batch: Any, perplexity: Perplexity) -> None:
        loss_sum, n_tokens = self._step(kind, batch)
        perplexity.update(loss_sum, n_tokens)
        # Weighted by the window's targets, Lightning's epoch mean is the loss per target token of the split.
        size = batch.target.numel()
        self.log(f"{kind}/loss", loss_sum / n_tokens.clamp(min=1), on_epoch=True, batch_size=size, sync_dist=True)
        self.log(f"{kind}/ppl", perplexity, on_epoch=True, prog_bar=kind == "val")

    # -- checkpoints ---------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the carried training state (plain tensors on the CPU) and the next window's position."""
        if self.stateful and "train" in self._states:
            state, position = self._states["train"]
            checkpoint[STATE_KEY] = {"state": [s.detach().cpu() for s in state], "next": int(position)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what ``on_save_checkpoint`` kept (used only if the first window continues it)."""
        saved = checkpoint.get(STATE_KEY)
        if saved and self.stateful:
            self._states["train"] = (tuple(saved["state"]), int(saved["next"]))

    # -- generation ----------------------------------------------------------------------

    def continuations(
        self, prompts: Sequence[str], datamodule: Any, per_prompt: int | None = None
    ) -> list[tuple[str, str]]:
        """``(prompt, prompt and continuation)`` texts, ``per_prompt`` samples each (default ``samples_per_prompt``).

        Every prompt is read after ``<eos>`` (a sentence start), in eval mode, with a generator seeded by
        ``sample_seed``, so the same weights give the same samples. ``datamodule`` supplies ``vocab`` (the
        checkpoint's vocabulary) and ``tokenizer`` (or ``lowercase``, for words).
        """
        if (
            getattr(datamodule, "vocab", None) is None
        ):  # not restored from a checkpoint: build it from the training split
            datamodule.setup("fit")
        vocab = datamodule.vocab
        tokenizer = getattr(datamodule, "tokenizer", None) or WordTokenizer(getattr(datamodule, "lowercase", True))
        hp = self.hparams
        per_prompt = hp.samples_per_prompt if per_prompt is None else per_prompt
        generator = torch.Generator().manual_seed(hp.sample_seed)
        was_training = self.net.training
        self.net.eval()
        try:
            pairs = []
            for text in prompts:
                words = tokenizer.tokenize(text)
                prompt_ids = [self.eos_index, *vocab.encode(words)]
                for _ in range(per_prompt):
                    ids = continue_prompt(
                        self.net,
                        prompt_ids,
                        hp.max_new_tokens,
                        self.eos_index,
                        hp.temperature,
                        hp.top_k,
                        generator,
                        self.device,
                    )
                    pairs.append((tokenizer.detokenize(words), tokenizer.detokenize(words + vocab.decode(ids))))
            return pairs
        finally:
            self.net.train(was_training)


class Perplexity(Metric):
    """exp(summed token loss / target tokens) over everything ``update`` saw (summed across processes)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("nll", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("tokens", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, loss_sum: Tensor, n_tokens: Tensor) -> None:
        """Add a window's summed loss and its number of target tokens."""
        self.nll += loss_sum.detach().float()
        self.tokens += n_tokens.float()

    def compute(self) -> Tensor:
        """The perplexity of the tokens seen."""
        return torch.exp(self.nll / self.tokens.clamp(min=1))
