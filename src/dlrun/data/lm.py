"""Data module for language models: any text corpus as token streams (words or subword pieces) read in windows."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from dlrun.contracts import DataModule, RunContext
from dlrun.data.errors import DataError, check_at_least
from dlrun.data.samplers import whole_batch_loader
from dlrun.data.streams import StreamWindows, WindowSampler, cut_streams
from dlrun.data.text import read_lines
from dlrun.data.text_state import VocabularyState
from dlrun.data.tokenizer import Tokenizer
from dlrun.data.vocab import BOS_INDEX, EOS_INDEX, PAD_INDEX, Vocabulary

SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class LanguageModelDataModule(VocabularyState, DataModule):
    """Three text files (plain or .gz, UTF-8, one sentence per line) as streams of next-token windows.

    Each split is tokenized (``lowercase``; ``tokenizer``: ``word`` or a ``bpe``/``unigram`` model of
    ``vocab_size`` pieces trained on the training split), encoded with the training split's vocabulary
    (words: ``min_freq``, ``max_size``; unknown tokens become ``<unk>``), joined into one stream with ``<eos>``
    after every sentence (empty lines are skipped) and cut into ``batch_size`` parallel rows
    (``eval_batch_size`` for val/test) per rank; see ``dlrun.data.streams`` for the layout. Training
    windows are ``bptt`` tokens long, or of random length around it (``random_bptt``, drawn from
    ``seed + epoch``). Under DDP each rank reads its own rows. Batches are ``LMBatch``es.
    """

    def __init__(
        self,
        train: str,
        val: str,
        test: str,
        batch_size: int = 20,
        eval_batch_size: int = 10,
        bptt: int = 35,
        random_bptt: bool = False,
        min_freq: int = 2,
        max_size: int | None = None,
        lowercase: bool = True,
        tokenizer: Literal["word", "bpe", "unigram"] = "word",
        vocab_size: int = 8000,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_at_least(
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("bptt", bptt, 1),
            ("min_freq", min_freq, 1),
            ("num_workers", num_workers, 0),
        )
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size: must be >= 0 or null, got {max_size}")
        self.paths = {"train": train, "val": val, "test": test}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.bptt = bptt
        self.random_bptt = random_bptt
        self.min_freq = min_freq
        self.max_size = max_size
        self.lowercase = lowercase
        self.configure_tokenizers(tokenizer, vocab_size, lowercase)
        self.num_workers = num_workers
        self.seed = seed
        self.vocab: Vocabulary | None = None
        self._lines: dict[str, list[str]] = {}  # split -> non-empty lines (read once)
        self._tokens: dict[str, list[list[str]]] = {}  # split -> tokenized sentences
        self._ids: dict[str, torch.Tensor] = {}  # split -> encoded stream (N,)

    # ------------------------------------------------------------------ reading and encoding
    def _sentences(self, split: str) -> list[list[str]]:
        """Tokenized non-empty lines of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")
        if split not in self._tokens:
            path = self.paths[split]
            if split not in self._lines:
                self._lines[split] = [line for line in read_lines(path) if line.strip()]
            if split == "train":
                self.fit_tokenizers({"vocab": self._lines[split]}, {"vocab": path})
            sentences = [tokens for tokens in self.tokenizer.tokenize_all(self._lines[split]) if tokens]
            if not sentences:
                raise DataError(f"{path}: no words (empty file or only blank lines)")
            self._tokens[split] = sentences
        return self._tokens[split]

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the corpus (a subword one trained on the training split first)."""
        if self.tokenizers is None:
            self._sentences("train")
        assert self.tokenizers is not None
        return self.tokenizers["vocab"]

    def _build_vocabularies(self) -> None:
        self.vocab = self.tokenizer.build_vocabulary(self._sentences("train"), self.min_freq, self.max_size)

    def _vocabularies_changed(self) -> None:
        self._ids.clear()  # encoded with other ids; lines stay cached
        self._tokens.clear()  # a restored tokenizer may split them differently

    def _vocab(self) -> Vocabulary:
        (vocab,) = self.vocabularies()
        return vocab

    def stream(self, split: str) -> torch.Tensor:
        """The whole encoded split ``(N,)``: each sentence's ids followed by ``<eos>``."""
        if split not in self._ids:
            vocab = self._vocab()
            ids: list[int] = []
            for sentence in self._sentences(split):
                ids.extend(vocab.encode(sentence))
                ids.append(EOS_INDEX)
            self._ids[split] = torch.tensor(ids, dtype=torch.long)
        return self._ids[split]

    def rows(self, split: str, world_size: int = 1, rank: int = 0) -> torch.Tensor:
        """This rank's rows ``(streams, L)`` of ``split`` (``batch_size`` rows for train, ``eval_batch_size`` else)."""
        streams = self.batch_size if split == "train" else self.eval_batch_size
        try:
            return cut_streams(self.stream(split), streams, world_size, rank)
        except ValueError as err:
            key = "batch_size" if split == "train" else "eval_batch_size"
            raise DataError(f"{self.paths[split]}: {err} (data.{key}={streams}, {world_size} process(es))") from None

    def setup(self, stage: str | None = None) -> None:
        """Read and encode the splits ``stage`` needs (all for ``None``); repeated calls reuse them."""
        for split in _STAGE_SPLITS.get(stage or "", SPLITS):
            self.stream(split)

    # ------------------------------------------------------------------ the contract
    @property
    def dims(self) -> dict[str, int]:
        """Keyword arguments for the model and objective: vocabulary size and special ids."""
        return {
            "vocab_size": len(self._vocab()),
            "pad_index": PAD_INDEX,
            "bos_index": BOS_INDEX,
            "eos_index": EOS_INDEX,
        }

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """Publish ``vocab/vocab.txt`` and a subword ``tokenizer.model`` at once; no callbacks."""
        for path in self.save_vocabularies(run.output_dir / "vocab"):
            run.publish(path, "vocab")
        return []

    def data_files(self) -> dict[str, list[Path]]:
        """The file each split is read from."""
        return {split: [Path(path)] for split, path in self.paths.items()}

    # ------------------------------------------------------------------ for generation and predict
    def encode(self, line: str) -> list[int]:
        """Ids of a line of text, tokenized as the corpus was (no ``<eos>`` added)."""
        return self._vocab().encode(self.tokenizer.tokenize(line))

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of ids: tokens up to the first ``<eos>``, detokenized."""
        return self.tokenizer.detokenize(self._vocab().decode(ids))

    def save_vocab(self, directory: str | Path) -> Path:
        """Write ``vocab.txt`` (one token per line, in id order; and ``tokenizer.model``) into ``directory``."""
        return self.save_vocabularies(directory)[0]

    # ------------------------------------------------------------------ dataloaders
    def _loader(self, split: str) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        rows = self.rows(split, world, rank)
        training = split == "train"
        sampler = WindowSampler(rows.size(1), self.bptt, self.random_bptt and training, self.seed)
        return whole_batch_loader(StreamWindows(rows), sampler, self.num_workers)  # (start, size) windows

    def train_dataloader(self) -> DataLoader:
        """Consecutive training windows of ``batch_size`` rows."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Consecutive validation windows of ``eval_batch_size`` rows, ``bptt`` tokens each."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Consecutive test windows of ``eval_batch_size`` rows, ``bptt`` tokens each."""
        return self._loader("test")
