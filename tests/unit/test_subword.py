"""Subword text (``data.tokenizer=bpe|unigram``): trained on the training split only, lossless, sized as asked,
kept in the data module's state; the language-model data module with BPE. Real Multi30k sentences throughout."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
import torch

from dlrun.data.errors import DataError
from dlrun.data.lm import LanguageModelDataModule
from dlrun.data.subword import SubwordTokenizer
from dlrun.data.text import read_lines
from dlrun.data.text_module import TextDataModule
from helpers import MULTI30K

pytestmark = pytest.mark.skipif(not (MULTI30K / "train.en.gz").is_file(), reason="Multi30k not found")

SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def multi30k_paths(**changed: str) -> dict[str, str]:
    """The six Multi30k files as ``TextDataModule`` arguments, some replaced."""
    paths = {
        f"{split}_{side}": str(MULTI30K / f"{stem}.{lang}.gz")
        for split, stem in SPLITS.items()
        for side, lang in (("src", "de"), ("tgt", "en"))
    }
    return {**paths, **changed}


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    return str(path)


@pytest.fixture(scope="module")
def english() -> dict[str, list[str]]:
    """The English side of Multi30k, by split, as read (stripped, non-empty)."""
    return {
        split: [s.strip() for s in read_lines(MULTI30K / f"{stem}.en.gz") if s.strip()]
        for split, stem in SPLITS.items()
    }


@pytest.fixture(scope="module")
def small_train(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The first 3,000 Multi30k training pairs (a subword model trains on them in a fraction of a second)."""
    folder = tmp_path_factory.mktemp("small")
    return {
        f"train_{side}": write_lines(folder / f"train.{lang}.gz", read_lines(MULTI30K / f"train.{lang}.gz")[:3000])
        for side, lang in (("src", "de"), ("tgt", "en"))
    }


# ---------------------------------------------------------------- the tokenizer itself


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_round_trip_on_real_sentences(kind: str, english: dict[str, list[str]]) -> None:
    """detokenize(tokenize(s)) == s for every training caption, and for every val/test caption whose characters
    the training split has (the rest hold a character the model never saw: it becomes <unk>)."""
    tokenizer = SubwordTokenizer.train(english["train"], kind, 4000, lowercase=False)
    pieces = tokenizer.tokenize_all(english["train"])
    assert [tokenizer.detokenize(p) for p in pieces] == english["train"]
    assert tokenizer.tokenize("A man, in blue.") == ["▁A", "▁man", ",", "▁in", "▁blue", "."]
    seen = set("".join(english["train"]))
    for split in ("val", "test"):
        covered = [s for s in english[split] if set(s) <= seen]
        assert len(covered) >= 0.99 * len(english[split])
        assert [tokenizer.detokenize(tokenizer.tokenize(s)) for s in covered] == covered
        unseen = [s for s in english[split] if not set(s) <= seen]
        assert all("<unk>" in tokenizer.detokenize(tokenizer.tokenize(s)) for s in unseen)
    lowered = SubwordTokenizer.train(english["train"][:3000], kind, 1000, lowercase=True)
    assert all(lowered.detokenize(lowered.tokenize(s)) == s.lower() for s in english["val"][:200])


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
@pytest.mark.parametrize("size", [300, 6400])
def test_vocabulary_size_is_honored(kind: str, size: int, english: dict[str, list[str]]) -> None:
    lines = english["train"] if size > 1000 else english["train"][:5000]  # a small unigram model prunes long
    vocab = SubwordTokenizer.train(lines, kind, size).build_vocabulary([], 1, None)
    assert len(vocab) == size
    assert vocab.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]


def test_training_is_deterministic(english: dict[str, list[str]]) -> None:
    """The same lines give the same model byte for byte (a resumed run retrains it before the checkpoint's wins)."""
    first, second = (SubwordTokenizer.train(english["train"][:5000], "unigram", 1000) for _ in range(2))
    assert first.model_proto == second.model_proto


# ---------------------------------------------------------------- the text data module


def test_tokenizer_is_trained_on_the_training_split_only(small_train: dict[str, str], tmp_path: Path) -> None:
    """A word seen only in validation (200 times) shapes neither the tokenizer nor the vocabulary; the same word
    in the training split does (the control that shows the test can fail)."""
    odd = "Ein zqxjv springt über den zqxjv."
    val_src = read_lines(MULTI30K / "val.de.gz")
    flooded = write_lines(tmp_path / "val.de.gz", val_src + [odd] * 200)
    flooded_tgt = write_lines(tmp_path / "val.en.gz", read_lines(MULTI30K / "val.en.gz") + ["A zqxjv jumps."] * 200)
    options = {"tokenizer": "bpe", "vocab_size": 800, "batch_size": 64}
    plain = TextDataModule(**multi30k_paths(**small_train), **options)
    with_odd_val = TextDataModule(**multi30k_paths(**small_train, val_src=flooded, val_tgt=flooded_tgt), **options)
    for module in (plain, with_odd_val):
        module.setup("fit")  # reads train and val
    assert plain.state_dict() == with_odd_val.state_dict()
    assert not any("zqxjv" in piece or "zq" in piece for piece in plain.src_vocab.itos)

    train_src = read_lines(small_train["train_src"])
    odd_train = {
        "train_src": write_lines(tmp_path / "train.de.gz", train_src[:-200] + [odd] * 200),
        "train_tgt": write_lines(tmp_path / "train.en.gz", read_lines(small_train["train_tgt"])[:-200] + ["A."] * 200),
    }
    control = TextDataModule(**multi30k_paths(**odd_train), **options)
    control.setup("fit")
    assert "▁zqxjv" in control.src_vocab.itos


def test_state_round_trips_through_a_checkpoint(small_train: dict[str, str], tmp_path: Path) -> None:
    """The vocabularies and both subword models travel in the state (``weights_only`` loadable); a module built
    with other settings takes them over, re-encodes, and a word module's state is what it was before."""
    bpe = TextDataModule(**multi30k_paths(**small_train), tokenizer="bpe", vocab_size=700, batch_size=64)
    bpe.setup("fit")
    buffer = io.BytesIO()
    torch.save({"state": bpe.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["state"]
    assert set(state) == {"src_vocab", "tgt_vocab", "tokenizers"}
    assert state["tokenizers"]["tgt_vocab"]["kind"] == "bpe"

    other = TextDataModule(**multi30k_paths(**small_train), tokenizer="unigram", vocab_size=900, batch_size=64)
    other.load_state_dict(state)  # before setup, as eval/predict do: no training split read
    assert other._lines == {}
    assert other.dims["tgt_vocab_size"] == 700 and other.tokenizers == bpe.tokenizers
    assert other.dataset("val").src.lengths.tolist() == bpe.dataset("val").src.lengths.tolist()
    assert other.decode_target(bpe.dataset("val").tgt[0]) == bpe.references("val")[0].lower()

    words = TextDataModule(**multi30k_paths(**small_train), batch_size=64)
    words.setup("fit")
    assert set(words.state_dict()) == {"src_vocab", "tgt_vocab"}
    files = words.save_vocab(tmp_path / "words")
    assert [p.name for p in files] == ["src_vocab.txt", "tgt_vocab.txt"]
    files = bpe.save_vocab(tmp_path / "bpe")
    assert [p.name for p in files] == ["src_vocab.txt", "tgt_vocab.txt", "src_tokenizer.model", "tgt_tokenizer.model"]
    import sentencepiece

    model = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "bpe" / "tgt_tokenizer.model"))
    assert [model.id_to_piece(i) for i in range(model.get_piece_size())] == bpe.tgt_vocab.itos


def test_predict_input_is_tokenized_like_the_source(small_train: dict[str, str]) -> None:
    """Typed lines go through the source's subword model: ids equal the training encoding of the same sentence."""
    module = TextDataModule(**multi30k_paths(**small_train), tokenizer="unigram", vocab_size=700, batch_size=4)
    module.setup("fit")
    line = module.sources("train")[0]
    (batch,) = list(module.source_batches([line]))
    expected = module.dataset("train").src[0].tolist()
    assert batch.src[0, : int(batch.src_lengths[0])].tolist()[: len(expected)] == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tokenizer": "bogus"}, r"^tokenizer: must be one of word, bpe, unigram, got 'bogus'$"),
        ({"tokenizer": "bpe", "vocab_size": 0}, r"^vocab_size: must be >= 5, got 0$"),
        ({"tokenizer": "bpe", "vocab_size": 4}, r"^vocab_size: must be >= 5, got 4$"),
    ],
)
def test_bad_settings_name_the_key(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TextDataModule(**multi30k_paths(), **options)
    with pytest.raises(ValueError, match=message):
        LanguageModelDataModule(train="t", val="v", test="x", **options)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (20, r"^data\.vocab_size: 20 cannot hold the training split's characters and the 4 specials \(at least \d+\)"),
        (90000, r"^data\.vocab_size: 90000 is more pieces than the training split gives \(at most \d+\)"),
    ],
)
def test_a_size_the_training_split_cannot_give_names_the_key(small_train: dict[str, str], size: int, message: str):
    module = TextDataModule(**multi30k_paths(**small_train), tokenizer="bpe", vocab_size=size)
    with pytest.raises(DataError, match=message + r" \(bpe on .*train\.de\.gz\)$"):
        module.setup("fit")


# ---------------------------------------------------------------- the language-model data module


def test_language_model_data_with_bpe(english: dict[str, list[str]]) -> None:
    """Streams of pieces: the vocabulary is the model's, sentences end in <eos>, and text comes back whole."""
    paths = {split: str(MULTI30K / f"{stem}.en.gz") for split, stem in SPLITS.items()}
    module = LanguageModelDataModule(**paths, tokenizer="bpe", vocab_size=1000)
    module.setup("fit")
    assert module.dims["vocab_size"] == 1000 and len(module.vocab) == 1000
    stream = module.stream("train")
    pieces = sum(len(p) for p in module.tokenizer.tokenize_all(english["train"]))
    assert stream.numel() == pieces + len(english["train"])  # one <eos> per caption
    assert int((stream == 1).sum()) == 0  # no <unk>: every training character is a piece
    first = english["val"][0]
    assert module.decode(module.encode(first)) == first.lower()
    assert set(module.state_dict()) == {"vocab", "tokenizers"}

    restored = LanguageModelDataModule(**paths, tokenizer="word")
    restored.load_state_dict(module.state_dict())
    assert restored.tokenizer == module.tokenizer and torch.equal(restored.stream("val"), module.stream("val"))
