"""Source sentences typed by a user (a file or stdin), encoded and batched like a text split."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from dlrun.data.text_batching import Ragged, TextBatch, collate
from dlrun.data.tokenizer import Tokenizer, WordTokenizer
from dlrun.data.vocab import Vocabulary


def source_batches(
    lines: Sequence[str],
    vocab: Vocabulary,
    batch_size: int,
    lowercase: bool = True,
    tokenizer: Tokenizer | None = None,
) -> Iterator[TextBatch]:
    """Batches of ``lines`` in order; each batch's ``ids`` map its rows back to line numbers.

    Targets are empty (``<bos> <eos>``): only ``src`` and ``src_lengths`` matter for translation.
    ``tokenizer`` splits the lines as the training source was (default: words, lowercased if ``lowercase``);
    unknown tokens become ``<unk>``.
    """
    tokenizer = tokenizer if tokenizer is not None else WordTokenizer(lowercase)
    src = Ragged.from_lists([vocab.encode(tokens) for tokens in tokenizer.tokenize_all(list(lines))])
    tgt = Ragged.from_lists([[] for _ in lines])
    for start in range(0, len(lines), batch_size):
        yield collate(src, tgt, list(range(start, min(start + batch_size, len(lines)))))
