"""LightningDataModule for any pair of sentence-aligned text files (e.g. Multi30k de->en)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from dlrun.contracts import DataModule, RunContext
from dlrun.data.errors import DataError, check_at_least
from dlrun.data.samplers import ordered_batches, whole_batch_loader
from dlrun.data.text import read_parallel
from dlrun.data.text_batching import BATCHING_MODES, Ragged, TextBatch, TextDataset, make_batch_sampler
from dlrun.data.text_state import VocabularyState
from dlrun.data.tokenizer import Tokenizer
from dlrun.data.vocab import BOS_INDEX, EOS_INDEX, PAD_INDEX, Vocabulary

SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class TextDataModule(VocabularyState, DataModule):
    """Sentence pairs from six files (train/val/test x source/target), tokenized, encoded and batched.

    Tokenizers and vocabularies come from the training split only: ``tokenizer`` ``word`` splits words and
    punctuation (vocabulary by ``min_freq``, ``max_size``), ``bpe``/``unigram`` train a subword model of
    ``vocab_size`` pieces per side (``dlrun.data.subword``). ``batching`` picks how training batches are
    formed (see ``dlrun.data.text_batching``); ``sort_pool`` sets how many batches ``bucket`` sorts
    by length together (0: the whole split); ``max_tokens`` caps ``tokens`` batches (``batch_size`` does not apply
    there).
    Validation and test batches hold ``batch_size`` pairs in file order. ``max_len`` (tokens: words or
    pieces) drops longer training pairs and is the fixed width of ``padded``. ``max_size`` counts non-special tokens.
    """

    VOCABULARIES = ("src_vocab", "tgt_vocab")

    def __init__(
        self,
        train_src: str,
        train_tgt: str,
        val_src: str,
        val_tgt: str,
        test_src: str,
        test_tgt: str,
        batch_size: int = 128,
        batching: Literal["padded", "dynamic", "bucket", "tokens"] = "bucket",
        max_tokens: int = 4096,
        max_len: int = 50,
        min_freq: int = 2,
        max_size: int | None = None,
        lowercase: bool = True,
        tokenizer: Literal["word", "bpe", "unigram"] = "word",
        vocab_size: int = 8000,
        sort_pool: int = 0,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_at_least(
            ("batch_size", batch_size, 1),
            ("max_tokens", max_tokens, 1),
            ("max_len", max_len, 1),
            ("min_freq", min_freq, 1),
            ("sort_pool", sort_pool, 0),
            ("num_workers", num_workers, 0),
        )
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size: must be >= 0 or null, got {max_size}")
        if batching not in BATCHING_MODES:
            raise ValueError(f"batching: must be one of {', '.join(BATCHING_MODES)}, got {batching!r}")
        if batching == "tokens" and max_tokens < max_len + 2:
            raise ValueError(
                f"max_tokens: must hold one pair of max_len={max_len} words + 2 specials, got {max_tokens}"
            )
        # No save_hyperparameters(): Lightning merges datamodule and model hparams and fails when a
        # shared key (seed, max_len) differs; the resolved config is recorded by dlrun's tracking instead.
        self.paths = {"train": (train_src, train_tgt), "val": (val_src, val_tgt), "test": (test_src, test_tgt)}
        self.batch_size = batch_size
        self.batching = batching
        self.max_tokens = max_tokens
        self.max_len = max_len
        self.min_freq = min_freq
        self.max_size = max_size
        self.lowercase = lowercase
        self.configure_tokenizers(tokenizer, vocab_size, lowercase)
        self.sort_pool = sort_pool
        self.num_workers = num_workers
        self.seed = seed
        self.src_vocab: Vocabulary | None = None
        self.tgt_vocab: Vocabulary | None = None
        self.dropped: dict[str, int] = {}  # split -> pairs with an empty side
        self.filtered: dict[str, int] = {}  # split -> pairs longer than max_len (training split only)
        self._lines: dict[str, tuple[list[str], list[str]]] = {}
        self._datasets: dict[str, TextDataset] = {}

    # ------------------------------------------------------------------ reading and encoding
    def _load(self, split: str) -> TextDataset:
        """Read, tokenize and encode ``split`` once; the training split also builds missing vocabularies."""
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")
        if split in self._datasets:
            return self._datasets[split]
        if self.src_vocab is None and split != "train":
            self._load("train")
        src_tokens, tgt_tokens = self._tokenized(split)
        if self.src_vocab is None or self.tgt_vocab is None:
            src_tokenizer, tgt_tokenizer = self._tokenizers()
            self.src_vocab = src_tokenizer.build_vocabulary(src_tokens, self.min_freq, self.max_size)
            self.tgt_vocab = tgt_tokenizer.build_vocabulary(tgt_tokens, self.min_freq, self.max_size)
        src = Ragged.from_lists([self.src_vocab.encode(tokens) for tokens in src_tokens])
        tgt = Ragged.from_lists([self.tgt_vocab.encode(tokens) for tokens in tgt_tokens])
        pad_to = self.max_len if self.batching == "padded" else None
        self._datasets[split] = TextDataset(src, tgt, pad_to=pad_to)
        return self._datasets[split]

    def _tokenized(self, split: str) -> tuple[list[list[str]], list[list[str]]]:
        """Tokens of the kept pairs of ``split``; their raw lines go to ``self._lines`` (read once)."""
        src_path, tgt_path = self.paths[split]
        if split in self._lines:
            sources, targets = self._lines[split]
        else:
            sources, targets, self.dropped[split] = read_parallel(src_path, tgt_path)
        if split == "train":
            files = {"src_vocab": src_path, "tgt_vocab": tgt_path}
            self.fit_tokenizers({"src_vocab": sources, "tgt_vocab": targets}, files)
        src_tokenizer, tgt_tokenizer = self._tokenizers()
        src_tokens = src_tokenizer.tokenize_all(sources)
        tgt_tokens = tgt_tokenizer.tokenize_all(targets)
        if split == "train" and split not in self._lines:
            limit = self.max_len
            keep = [
                i
                for i, (s, t) in enumerate(zip(src_tokens, tgt_tokens, strict=True))
                if len(s) <= limit and len(t) <= limit
            ]
            self.filtered[split] = len(sources) - len(keep)
            sources, targets = [sources[i] for i in keep], [targets[i] for i in keep]
            src_tokens, tgt_tokens = [src_tokens[i] for i in keep], [tgt_tokens[i] for i in keep]
        self.filtered.setdefault(split, 0)
        if not sources:
            raise DataError(
                f"{src_path}: no usable sentence pairs with {tgt_path} "
                f"({self.dropped[split]} empty, {self.filtered[split]} longer than max_len={self.max_len})"
            )
        self._lines[split] = (sources, targets)
        return src_tokens, tgt_tokens

    def _build_vocabularies(self) -> None:
        self._load("train")

    def _vocabularies_changed(self) -> None:
        self._datasets.clear()  # encoded with other ids; raw lines stay cached

    def _tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        """Source and target tokenizers (subword ones trained on the training split first)."""
        if self.tokenizers is None:
            self._load("train")
        assert self.tokenizers is not None
        return self.tokenizers["src_vocab"], self.tokenizers["tgt_vocab"]

    def _vocabs(self) -> tuple[Vocabulary, Vocabulary]:
        src_vocab, tgt_vocab = self.vocabularies()
        return src_vocab, tgt_vocab

    def setup(self, stage: str | None = None) -> None:
        """Load the splits ``stage`` needs (all for ``None``); repeated calls reuse what is loaded."""
        for split in _STAGE_SPLITS.get(stage or "", SPLITS):
            self._load(split)

    # ------------------------------------------------------------------ what the rest of dlrun reads
    @property
    def dims(self) -> dict[str, int]:
        """Keyword arguments for a seq2seq model: vocabulary sizes and special ids."""
        src_vocab, tgt_vocab = self._vocabs()
        return {
            "src_vocab_size": len(src_vocab),
            "tgt_vocab_size": len(tgt_vocab),
            "pad_index": PAD_INDEX,
            "bos_index": BOS_INDEX,
            "eos_index": EOS_INDEX,
        }

    def dataset(self, split: str) -> TextDataset:
        """The encoded pairs of ``split`` (``train``, ``val`` or ``test``)."""
        return self._load(split)

    def references(self, split: str) -> list[str]:
        """Target lines of ``split`` as read (stripped), aligned with the batches' ``ids``."""
        self._load(split)
        return self._lines[split][1]

    def sources(self, split: str) -> list[str]:
        """Source lines of ``split`` as read (stripped), aligned with the batches' ``ids``."""
        self._load(split)
        return self._lines[split][0]

    def detokenize(self, tokens: list[str]) -> str:
        """Target tokens (e.g. ``tgt_vocab.decode(ids)``) -> plain text (natural punctuation spacing, pieces joined)."""
        return self._tokenizers()[1].detokenize(tokens)

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """Publish ``vocab/src_vocab.txt``, ``vocab/tgt_vocab.txt`` (subword: ``*_tokenizer.model``), no callbacks."""
        for path in self.save_vocab(run.output_dir / "vocab"):
            run.publish(path, "vocab")
        return []

    def data_files(self) -> dict[str, list[Path]]:
        """The six files, by split (source first)."""
        return {split: [Path(self.paths[split][0]), Path(self.paths[split][1])] for split in SPLITS}

    def source_batches(self, lines: list[str]) -> Any:
        """Batches of typed source sentences (``ids`` map rows back to lines), tokenized and encoded like the source."""
        from dlrun.data.text_input import source_batches

        if self.src_vocab is None:  # an old checkpoint without the data module's state: rebuild from the training files
            self.setup("fit")
        return source_batches(lines, self.src_vocab, self.batch_size, tokenizer=self._tokenizers()[0])

    def decode_target(self, ids: list[int]) -> str:
        """Target token ids (stopping at ``<eos>``) -> a detokenized sentence."""
        return self.detokenize(self.tgt_vocab.decode(ids))

    def save_vocab(self, directory: str | Path) -> list[Path]:
        """Write ``src_vocab.txt`` and ``tgt_vocab.txt`` (one token per line), subword models too, in ``directory``."""
        return self.save_vocabularies(directory)

    def pad_fraction(self, split: str = "train", epoch: int = 0) -> float:
        """Padding / all tokens (source and target) over the batches of one epoch, from lengths alone."""
        dataset = self._load(split)
        sampler = self._sampler(split, dataset)
        sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        src_len, tgt_len = dataset.src.lengths + 1, dataset.tgt.lengths + 2
        floor = dataset.pad_to or 0
        padded = real = 0
        for ids in sampler:
            index = torch.as_tensor(ids)
            s, t = src_len[index], tgt_len[index]
            padded += len(ids) * (max(int(s.max()), floor + 1) + max(int(t.max()), floor + 2))
            real += int(s.sum()) + int(t.sum())
        return 1 - real / padded if padded else 0.0

    # ------------------------------------------------------------------ dataloaders
    def _sampler(self, split: str, dataset: TextDataset) -> Sampler[list[int]]:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        if split != "train":
            return ordered_batches(len(dataset), self.batch_size, world, rank)
        return make_batch_sampler(
            self.batching,
            dataset.src.lengths,
            dataset.tgt.lengths,
            self.batch_size,
            max_tokens=self.max_tokens,
            sort_pool=self.sort_pool,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
        )

    def _loader(self, split: str) -> DataLoader:
        dataset = self._load(split)
        return whole_batch_loader(
            dataset, self._sampler(split, dataset), self.num_workers
        )  # id lists, collated at once

    def train_dataloader(self) -> DataLoader:
        """Training batches formed by ``batching``, reshuffled every epoch."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches of ``batch_size`` pairs, in file order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches of ``batch_size`` pairs, in file order."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test split, in file order (``ids`` index ``sources('test')``)."""
        return self._loader("test")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """A ``TextBatch`` to ``device`` with ``src_lengths`` left on the host.

        Packing the encoder's input needs the lengths on the host (the network checks and packs with
        ``src_lengths.cpu()``); copied to a GPU, they would be copied back every step, and a copy from the
        GPU waits for all its queued work: one full host-device synchronization per training step.
        """
        if not isinstance(batch, TextBatch):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        non_blocking = device.type == "cuda"  # pinned batches: the copies overlap the host's work
        moved = (t.to(device, non_blocking=non_blocking) for t in (batch.src, batch.tgt, batch.ids))
        src, tgt, ids = moved
        return TextBatch(src=src, src_lengths=batch.src_lengths, tgt=tgt, ids=ids)
