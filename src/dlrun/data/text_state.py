"""What a text data module checkpoints: its vocabularies and the tokenizers that made their tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dlrun.data.errors import DataError, check_at_least
from dlrun.data.subword import SubwordTokenizer, VocabSizeError
from dlrun.data.tokenizer import TOKENIZERS, Tokenizer, WordTokenizer
from dlrun.data.vocab import SPECIALS, Vocabulary

TOKENIZERS_KEY = "tokenizers"  # in the state: subword models by vocabulary name (absent for words)


class VocabularyState:
    """Vocabularies by attribute name (``VOCABULARIES``), each with its tokenizer (``tokenizers[name]``).

    Mixed into a ``LightningDataModule``: ``state_dict`` goes into every checkpoint, ``load_state_dict``
    restores it before the model is sized, ``save_vocabularies`` writes ``<name>.txt`` files (and the
    subword models). A subclass calls ``configure_tokenizers`` in its constructor, trains subword tokenizers on
    its training split with ``fit_tokenizers``, builds missing vocabularies in ``_build_vocabularies`` and
    drops encodings in ``_vocabularies_changed``. A checkpoint's tokenizers win over the configured ones:
    its ids only mean something with the tokenizer that made them.
    """

    VOCABULARIES: tuple[str, ...] = ("vocab",)

    def configure_tokenizers(self, kind: str, vocab_size: int, lowercase: bool) -> None:
        """Check ``tokenizer`` and ``vocab_size``; words need no training, so their tokenizers are ready at once."""
        if kind not in TOKENIZERS:
            raise ValueError(f"tokenizer: must be one of {', '.join(TOKENIZERS)}, got {kind!r}")
        check_at_least(("vocab_size", vocab_size, len(SPECIALS) + 1))
        self.tokenizer_kind = kind
        self.vocab_size = vocab_size
        self.tokenizers: dict[str, Tokenizer] | None = None
        if kind == "word":
            self.tokenizers = {name: WordTokenizer(lowercase) for name in self.VOCABULARIES}

    def fit_tokenizers(self, lines: Mapping[str, Sequence[str]], files: Mapping[str, str]) -> dict[str, Tokenizer]:
        """Train the missing subword tokenizers on the training ``lines`` of each vocabulary (read from ``files``)."""
        if self.tokenizers is None:
            fitted: dict[str, Tokenizer] = {}
            for name in self.VOCABULARIES:
                try:
                    fitted[name] = SubwordTokenizer.train(
                        lines[name], self.tokenizer_kind, self.vocab_size, getattr(self, "lowercase", True)
                    )
                except VocabSizeError as err:
                    raise DataError(f"data.vocab_size: {err} ({self.tokenizer_kind} on {files[name]})") from None
            self.tokenizers = fitted
        return self.tokenizers

    def _build_vocabularies(self) -> None:
        """Build every vocabulary (and train subword tokenizers) from the training split."""
        raise NotImplementedError

    def _vocabularies_changed(self) -> None:
        """Forget what was tokenized or encoded with the previous tokenizers and vocabularies (raw text stays)."""

    def vocabularies(self) -> list[Vocabulary]:
        """The vocabularies in ``VOCABULARIES`` order, built from the training split if missing."""
        if any(getattr(self, name) is None for name in self.VOCABULARIES):
            self._build_vocabularies()
        return [getattr(self, name) for name in self.VOCABULARIES]

    def state_dict(self) -> dict[str, Any]:
        """Vocabularies as plain lists and subword models as bytes (empty before they exist), saved in checkpoints."""
        if any(getattr(self, name) is None for name in self.VOCABULARIES):
            return {}
        state: dict[str, Any] = {name: getattr(self, name).to_list() for name in self.VOCABULARIES}
        subword = {
            name: tokenizer.state()
            for name, tokenizer in (self.tokenizers or {}).items()
            if isinstance(tokenizer, SubwordTokenizer)
        }
        if subword:  # a word checkpoint stays as it was before subword text existed
            state[TOKENIZERS_KEY] = subword
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Use a checkpoint's vocabularies and tokenizers instead of building them (re-encoding if they differ)."""
        if not state_dict:
            return
        restored = {name: Vocabulary.from_list(state_dict[name]) for name in self.VOCABULARIES}
        saved = state_dict.get(TOKENIZERS_KEY) or {}
        lowercase = getattr(self, "lowercase", True)
        tokenizers: dict[str, Tokenizer] = {
            name: SubwordTokenizer.from_state(saved[name]) if name in saved else WordTokenizer(lowercase)
            for name in self.VOCABULARIES
        }
        same_vocabs = all(vocab == getattr(self, name) for name, vocab in restored.items())
        if same_vocabs and tokenizers == self.tokenizers:
            return
        for name, vocab in restored.items():
            setattr(self, name, vocab)
        self.tokenizers = tokenizers
        self.tokenizer_kind = next(iter(tokenizers.values())).kind
        self._vocabularies_changed()

    def save_vocabularies(self, directory: str | Path) -> list[Path]:
        """Write ``<name>.txt`` (one token per line, in id order) per vocabulary, and its subword model if any.

        A subword model goes to ``<name with vocab -> tokenizer>.model`` (``src_tokenizer.model``), a
        sentencepiece model file.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocabs = self.vocabularies()
        paths = [vocab.save(directory / f"{name}.txt") for name, vocab in zip(self.VOCABULARIES, vocabs, strict=True)]
        for name, tokenizer in (self.tokenizers or {}).items():
            if isinstance(tokenizer, SubwordTokenizer):
                paths.append(tokenizer.save(directory / f"{name.replace('vocab', 'tokenizer')}.model"))
        return paths
