"""Count-based baseline for the language-model preset: interpolated Kneser-Ney trigram perplexity on the same tokens.

    python bench/kn_trigram.py              # Multi30k English, the preset's tokenizer, vocabulary and streams

Tokens come from dlrun's ``LanguageModelDataModule`` with the settings of ``experiments/multi30k_lm.yaml``: the
same tokenizer (lowercased), the training split's vocabulary (``min_freq``; rarer words are ``<unk>``), ``<eos>``
after every sentence, one stream per split. Counts are taken over the whole training stream. The test
perplexity is over exactly the targets the neural model is scored on (each of the ``eval_batch_size`` test rows
without its first token), each predicted from the two tokens before it in the stream.

Interpolated Kneser-Ney (Chen & Goodman 1998): one absolute discount per order, D = n1 / (n1 + 2 n2) from that
order's counts of counts; trigram counts at the top, continuation counts (distinct left contexts) below, and
the unigram level interpolated with the uniform distribution over the vocabulary. Every distribution sums to
one (checked on a few contexts before scoring).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections import Counter
from collections.abc import Sequence

from common import data_dir, emit, machine
from lm_impl_speed import preset


class KneserNeyTrigram:
    """Interpolated Kneser-Ney trigram model over integer token ids ``0 .. vocab_size - 1``."""

    def __init__(self, tokens: Sequence[int], vocab_size: int) -> None:
        self.vocab_size = vocab_size
        tri = Counter(zip(tokens, tokens[1:], tokens[2:], strict=False))
        self.tri = tri
        self.tri_ctx: Counter = Counter()
        self.tri_types: Counter = Counter()  # (u, v) -> distinct w
        bi_cont: Counter = Counter()  # (v, w) -> distinct u before it
        for (u, v, w), n in tri.items():
            self.tri_ctx[(u, v)] += n
            self.tri_types[(u, v)] += 1
            bi_cont[(v, w)] += 1
        self.bi = bi_cont
        self.bi_ctx: Counter = Counter()
        self.bi_types: Counter = Counter()
        uni_cont: Counter = Counter()  # w -> distinct v before it
        for (v, _w), n in bi_cont.items():
            self.bi_ctx[v] += n
            self.bi_types[v] += 1
        for _v, w in Counter(itertools.pairwise(tokens)):
            uni_cont[w] += 1
        self.uni = uni_cont
        self.uni_total = sum(uni_cont.values())
        self.d3, self.d2, self.d1 = (self.discount(c) for c in (tri, bi_cont, uni_cont))

    @staticmethod
    def discount(counts: Counter) -> float:
        """Chen-Goodman's D = n1 / (n1 + 2 n2) from the counts of counts."""
        of = Counter(counts.values())
        return of[1] / (of[1] + 2 * of[2]) if of[1] + of[2] else 0.5

    def p1(self, w: int) -> float:
        """Continuation unigram, interpolated with the uniform distribution."""
        kept = max(self.uni.get(w, 0) - self.d1, 0.0) / self.uni_total
        return kept + self.d1 * len(self.uni) / self.uni_total / self.vocab_size

    def p2(self, w: int, v: int) -> float:
        """Continuation bigram P(w | v), backing off into ``p1``."""
        total = self.bi_ctx.get(v, 0)
        if not total:
            return self.p1(w)
        kept = max(self.bi.get((v, w), 0) - self.d2, 0.0) / total
        return kept + self.d2 * self.bi_types[v] / total * self.p1(w)

    def p3(self, w: int, u: int, v: int) -> float:
        """Trigram P(w | u, v), backing off into ``p2``."""
        total = self.tri_ctx.get((u, v), 0)
        if not total:
            return self.p2(w, v)
        kept = max(self.tri.get((u, v, w), 0) - self.d3, 0.0) / total
        return kept + self.d3 * self.tri_types[(u, v)] / total * self.p2(w, v)


def perplexity(model: KneserNeyTrigram, stream: Sequence[int], positions: Sequence[int], start: int) -> float:
    """exp of the mean negative log-probability of ``stream[i]`` given the two tokens before it, over ``positions``."""
    nll = 0.0
    for i in positions:
        u = stream[i - 2] if i >= 2 else start
        v = stream[i - 1] if i >= 1 else start
        nll -= math.log(model.p3(stream[i], u, v))
    return math.exp(nll / len(positions))


def scored_positions(num_tokens: int, streams: int) -> list[int]:
    """Stream positions of the targets the neural model is scored on: every row of ``streams`` but its first token."""
    length = num_tokens // streams
    return [row * length + j for row in range(streams) for j in range(1, length)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    from dlrun.data.lm import LanguageModelDataModule
    from dlrun.data.vocab import EOS_INDEX

    _, data_kwargs = preset()
    folder = data_dir() / "multi30k"
    dm = LanguageModelDataModule(
        str(folder / "train.en.gz"), str(folder / "val.en.gz"), str(folder / "test_2016_flickr.en.gz"), **data_kwargs
    )
    dm.setup()
    started = time.perf_counter()
    train = dm.stream("train").tolist()
    model = KneserNeyTrigram(train, len(dm.vocab))
    for context in [(EOS_INDEX, EOS_INDEX), tuple(train[10:12]), (train[5], 1)]:
        total = sum(model.p3(w, *context) for w in range(model.vocab_size))
        assert abs(total - 1) < 1e-9, f"P(. | {context}) sums to {total}"
    results = {"machine": machine(), "data": data_kwargs, "vocab_size": len(dm.vocab), "train_tokens": len(train)}
    results["discounts"] = {"trigram": round(model.d3, 4), "bigram": round(model.d2, 4), "unigram": round(model.d1, 4)}
    for split in ("val", "test"):
        stream = dm.stream(split).tolist()
        positions = scored_positions(len(stream), dm.eval_batch_size)
        results[f"{split}_tokens"] = len(positions)
        results[f"{split}_ppl"] = round(perplexity(model, stream, positions, EOS_INDEX), 2)
        results[f"{split}_ppl_all_tokens"] = round(perplexity(model, stream, range(len(stream)), EOS_INDEX), 2)
    results["seconds"] = round(time.perf_counter() - started, 1)
    emit(results, None if args.json is None else __import__("pathlib").Path(args.json))


if __name__ == "__main__":
    main()
