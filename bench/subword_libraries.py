"""Which subword library for ``data.tokenizer=bpe|unigram``: sentencepiece vs Hugging Face ``tokenizers``.

    pip install tokenizers          # only for this measurement; dlrun depends on sentencepiece alone
    RAYON_NUM_THREADS=1 python bench/subword_libraries.py

Trains a BPE and a unigram model of 8,000 pieces (the 4 specials included) on each side of Multi30k's training
split (lowercased, as the presets read it), encodes the split with it, and checks the round trip
``decode(encode(s)) == s``. Both libraries are set up alike: no normalization, spaces kept as written, the
pieces marked with ``▁`` (HF: a ``Metaspace`` pre-tokenizer and decoder), one thread each (``RAYON_NUM_THREADS``
for HF, ``num_threads`` for sentencepiece). Prints the median of 3 repeats per line.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dlrun.data.text import read_lines  # noqa: E402
from dlrun.data.vocab import SPECIALS  # noqa: E402

DATA = Path(os.environ.get("DLRUN_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "multi30k"
SIZE = 8000
THREADS = int(os.environ.get("RAYON_NUM_THREADS", "1"))


def hf_tokenizers(kind: str, lines: list[str]) -> tuple[float, float, int, int, int]:
    """(train s, encode s, vocabulary size, lines that round-trip, pieces) with Hugging Face ``tokenizers``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=SIZE, special_tokens=list(SPECIALS), show_progress=False)
    else:
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=SIZE, special_tokens=list(SPECIALS), unk_token="<unk>", show_progress=False
        )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    start = time.perf_counter()
    tokenizer.train_from_iterator(lines, trainer)
    trained = time.perf_counter()
    encoded = tokenizer.encode_batch(lines)
    done = time.perf_counter()
    same = sum(tokenizer.decoder.decode(e.tokens) == s for e, s in zip(encoded, lines, strict=True))
    return trained - start, done - trained, tokenizer.get_vocab_size(), same, sum(len(e.tokens) for e in encoded)


def sentencepiece(kind: str, lines: list[str]) -> tuple[float, float, int, int, int]:
    """(train s, encode s, vocabulary size, lines that round-trip, pieces) with sentencepiece."""
    import sentencepiece as spm

    model = io.BytesIO()
    start = time.perf_counter()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=SIZE,
        model_type=kind,
        **{f"{name}_id": i for i, name in enumerate(("pad", "unk", "bos", "eos"))},
        **{f"{name}_piece": p for name, p in zip(("pad", "unk", "bos", "eos"), SPECIALS, strict=True)},
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        hard_vocab_limit=False,  # here: report the size it reaches instead of failing
        num_threads=THREADS,
        minloglevel=2,
    )
    trained = time.perf_counter()
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    encoded = processor.encode(lines, out_type=str, num_threads=THREADS)
    done = time.perf_counter()
    same = sum(processor.decode_pieces(p) == s for p, s in zip(encoded, lines, strict=True))
    return trained - start, done - trained, processor.get_piece_size(), same, sum(map(len, encoded))


def main() -> None:
    """One line per side, kind and library."""
    for side in ("de", "en"):
        lines = [s.strip().lower() for s in read_lines(DATA / f"train.{side}.gz") if s.strip()]
        for kind in ("bpe", "unigram"):
            for name, measure in (("tokenizers", hf_tokenizers), ("sentencepiece", sentencepiece)):
                runs = [measure(kind, lines) for _ in range(3)]
                train = statistics.median(r[0] for r in runs)
                encode = statistics.median(r[1] for r in runs)
                _, _, size, same, pieces = runs[0]
                print(
                    f"{side} {kind:8s} {name:14s} train {train:6.2f}s encode {encode:5.2f}s vocab {size} "
                    f"round trip {same}/{len(lines)} pieces {pieces}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
