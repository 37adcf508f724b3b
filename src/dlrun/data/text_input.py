"""Source sentences typed by a user (a file or stdin), encoded and batched like a text split."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from dlrun.data.text_batching import Ragged, TextBatch, collate
from dlrun.data.tokenizer import tokenize
from dlrun.data.vocab import Vocabulary


def source_batches(
    lines: Sequence[str], vocab: Vocabulary, batch_size: int, lowercase: bool = True
) -> Iterator[TextBatch]:
    """Batches of ``lines`` in order; each batch's ``ids`` map its rows back to line numbers.

    Targets are empty (``<bos> <eos>``): only ``src`` and ``src_lengths`` matter for translation.
    Unknown words become ``<unk>``.
    """
    src = Ragged.from_lists([vocab.encode(tokenize(line, lowercase)) for line in lines])
    tgt = Ragged.from_lists([[] for _ in lines])
    for start in range(0, len(lines), batch_size):
        yield collate(src, tgt, list(range(start, min(start + batch_size, len(lines)))))
