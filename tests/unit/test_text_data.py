"""Text data: reading, tokenizer, vocabulary and the TextDataModule (errors, state, Lightning wiring)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from dlrun.data.errors import DataError
from dlrun.data.text import read_lines, read_parallel
from dlrun.data.text_module import TextDataModule
from dlrun.data.tokenizer import detokenize, tokenize
from dlrun.data.vocab import Vocabulary
from helpers import MULTI30K, REPO

TRAIN = [
    ("Ein Hund läuft.", "A dog runs."),
    ("Ein Hund schläft.", "A dog sleeps."),
    ("   ", "An empty source."),
    ("Eine Katze läuft.", "A cat runs."),
    ("Ein Mann.", ""),
    ("Ein Hund, eine Katze.", "A dog, a cat."),
    ("Hund " * 8, "dog " * 8),  # longer than max_len=6
]
VAL = [("Ein Hund.", "A dog."), ("Eine Kuh.", "A cow.")]
TEST = [("Eine Katze schläft.", "A cat sleeps."), ("Ein Hund läuft.", "A dog runs."), ("Ein Vogel.", "A bird.")]


def write(path: Path, lines: list[str]) -> str:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


def write_corpus(folder: Path) -> dict[str, str]:
    paths = {}
    for split, pairs, suffix in (("train", TRAIN, ".gz"), ("val", VAL, ""), ("test", TEST, ".gz")):
        paths[f"{split}_src"] = write(folder / f"{split}.de{suffix}", [s for s, _ in pairs])
        paths[f"{split}_tgt"] = write(folder / f"{split}.en{suffix}", [t for _, t in pairs])
    return paths


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, str]:
    return write_corpus(tmp_path)


def make_module(paths: dict[str, str], **kwargs) -> TextDataModule:
    options = {"batch_size": 2, "max_len": 6, "min_freq": 2, **kwargs}
    return TextDataModule(**paths, **options)


# ---------------------------------------------------------------- tokenizer


def test_tokenize_splits_punctuation_and_lowercases() -> None:
    assert tokenize("A man, in blue.") == ["a", "man", ",", "in", "blue", "."]
    assert tokenize("A man, in blue.", lowercase=False) == ["A", "man", ",", "in", "blue", "."]
    assert tokenize("Don't wear a t-shirt at 10:30 (3.5 km)!") == [
        "don't", "wear", "a", "t-shirt", "at", "10:30", "(", "3.5", "km", ")", "!",
    ]  # fmt: skip
    assert tokenize("Zwei Männer über'm Fluß") == ["zwei", "männer", "über'm", "fluß"]


def test_detokenize_undoes_punctuation_spacing() -> None:
    assert detokenize("a man , in blue .".split()) == "a man, in blue."
    assert detokenize('he said " hello ( world ) " !'.split()) == 'he said "hello (world)"!'
    assert detokenize([]) == ""


def test_detokenize_inverts_tokenize_on_multi30k_like_text() -> None:
    for line in ("Two young, White males are outside near many bushes.", "A dog (brown) jumps: high!"):
        assert detokenize(tokenize(line)) == line.lower()


# ---------------------------------------------------------------- vocabulary


def test_vocabulary_specials_min_freq_and_max_size() -> None:
    sentences = [["b", "a", "a"], ["c", "b", "a"], ["d"]]
    vocab = Vocabulary.build(sentences, min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b"]
    assert vocab.stoi["<pad>"] == 0 and vocab.stoi["<unk>"] == 1 and vocab.stoi["<bos>"] == 2
    assert vocab.stoi["<eos>"] == 3 and len(vocab) == 6
    assert Vocabulary.build(sentences, min_freq=1, max_size=1).itos[4:] == ["a"]
    assert Vocabulary.build(sentences, min_freq=1).itos[4:] == ["a", "b", "c", "d"]  # by count, then name
    assert vocab.encode(["a", "zzz", "b"]) == [4, 1, 5]
    assert vocab.decode([2, 4, 1, 0, 5, 3, 4, 4]) == ["a", "<unk>", "b"]  # stops at <eos>
    assert vocab.decode(torch.tensor([2, 5, 0, 0])) == ["b"]


def test_vocabulary_save_and_lists(tmp_path: Path) -> None:
    vocab = Vocabulary.build([["x", "y", "x"]])
    path = vocab.save(tmp_path / "v.txt")
    assert path.read_text(encoding="utf-8") == "<pad>\n<unk>\n<bos>\n<eos>\nx\ny\n"
    assert Vocabulary.load(path) == vocab
    assert Vocabulary.from_list(vocab.to_list()) == vocab
    with pytest.raises(ValueError, match="vocabulary: must start with <pad> <unk> <bos> <eos>"):
        Vocabulary.from_list(["x", "<pad>"])


# ---------------------------------------------------------------- reading


def test_read_lines_plain_gzip_and_separators(tmp_path: Path) -> None:
    # \x0b and \u2028 inside a sentence must not split it (they would shift the alignment)
    lines = ["ein\x0bhund", "zwei\u2028katzen", "", "drei"]
    assert read_lines(write(tmp_path / "a.txt", lines)) == lines
    assert read_lines(write(tmp_path / "a.gz", lines)) == lines


def test_misaligned_files_name_both_files_and_counts(tmp_path: Path) -> None:
    src = write(tmp_path / "s.txt", ["a", "b", "c"])
    tgt = write(tmp_path / "t.gz", ["a", "b"])
    with pytest.raises(DataError) as error:
        read_parallel(src, tgt)
    assert str(error.value) == f"{src} has 3 lines but {tgt} has 2: files must be sentence-aligned"


def test_bad_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"eins\nzwei\ndr" + b"\xff" + b"i\nvier\n"))
    with pytest.raises(DataError) as error:
        read_lines(path)
    assert str(error.value) == f"{path}:3: not valid UTF-8 (byte 0xff at column 3)"
    assert "\n" not in str(error.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: file not found$"):
        read_lines(tmp_path / "nope.txt")
    (tmp_path / "fake.gz").write_text("not gzip\n")
    with pytest.raises(DataError, match=r"fake\.gz: not a valid gzip file"):
        read_lines(tmp_path / "fake.gz")


# ---------------------------------------------------------------- data module


def test_empty_pairs_dropped_and_long_pairs_filtered(corpus: dict[str, str]) -> None:
    module = make_module(corpus)
    module.setup("fit")
    assert module.dropped == {"train": 2, "val": 0}
    assert module.filtered == {"train": 1, "val": 0}
    kept = ["Ein Hund läuft.", "Ein Hund schläft.", "Eine Katze läuft.", "Ein Hund, eine Katze."]
    assert module.sources("train") == kept
    assert module.references("train") == ["A dog runs.", "A dog sleeps.", "A cat runs.", "A dog, a cat."]
    assert len(module.dataset("train")) == 4


def test_vocab_from_training_split_and_dims(corpus: dict[str, str]) -> None:
    module = make_module(corpus)
    # min_freq=2 over the 4 kept training pairs (lowercased)
    assert module.dims == {"src_vocab_size": 10, "tgt_vocab_size": 9, "pad_index": 0, "bos_index": 2, "eos_index": 3}
    # by count, ties alphabetical; "schläft" and "," (once each) and the filtered long pair are out
    assert module.src_vocab.itos[4:] == [".", "ein", "hund", "eine", "katze", "läuft"]
    assert module.tgt_vocab.itos[4:] == ["a", ".", "dog", "cat", "runs"]
    assert "kuh" not in module.src_vocab.stoi  # val words never enter the vocabulary


def test_batches_match_references_through_ids(corpus: dict[str, str]) -> None:
    module = make_module(corpus, min_freq=1)
    module.setup("test")
    seen = []
    for batch in module.test_dataloader():
        assert torch.all(batch.src_lengths[:-1] >= batch.src_lengths[1:])
        for row, index in enumerate(batch.ids.tolist()):
            words = module.tgt_vocab.decode(batch.tgt[row])
            expected = module.references("test")[index]
            if all(w in module.tgt_vocab.stoi for w in tokenize(expected)):
                assert module.detokenize(words) == expected.lower()
            seen.append(index)
    assert seen == [0, 1, 2]  # test batches follow file order


def test_state_dict_round_trip_reuses_vocab(corpus: dict[str, str], tmp_path: Path) -> None:
    trained = make_module(corpus)
    trained.setup("fit")
    torch.save({"datamodule": trained.state_dict()}, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)["datamodule"]
    assert state == {"src_vocab": trained.src_vocab.itos, "tgt_vocab": trained.tgt_vocab.itos}

    # training files gone: setup("test") must use the restored vocabularies, not rebuild them
    paths = {**corpus, "train_src": str(tmp_path / "gone.de"), "train_tgt": str(tmp_path / "gone.en")}
    restored = make_module(paths, min_freq=1)
    restored.load_state_dict(state)
    restored.setup("test")
    restored.setup("test")  # repeated setup is a no-op
    assert restored.src_vocab == trained.src_vocab and restored.tgt_vocab == trained.tgt_vocab
    assert restored.dims == trained.dims
    assert "train" not in restored.dropped
    with pytest.raises(DataError, match=r"gone\.de: file not found"):
        restored.setup("fit")


def test_load_state_dict_after_setup_reencodes(corpus: dict[str, str]) -> None:
    module = make_module(corpus, min_freq=1)
    module.setup("test")
    before = module.dataset("test").src.flat.clone()
    itos = ["<pad>", "<unk>", "<bos>", "<eos>", "katze"]
    module.load_state_dict({"src_vocab": itos, "tgt_vocab": itos})
    after = module.dataset("test").src.flat
    assert module.dims["src_vocab_size"] == 5
    assert not torch.equal(before, after)
    assert set(after.tolist()) <= {1, 4}


def test_save_vocab(corpus: dict[str, str], tmp_path: Path) -> None:
    module = make_module(corpus)
    paths = module.save_vocab(tmp_path / "vocab")
    assert [p.name for p in paths] == ["src_vocab.txt", "tgt_vocab.txt"]
    assert Vocabulary.load(paths[0]) == module.src_vocab
    assert paths[1].read_text(encoding="utf-8").split("\n")[:6] == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "."]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("batch_size", 0, "batch_size: must be >= 1, got 0"),
        ("max_len", 0, "max_len: must be >= 1, got 0"),
        ("num_workers", -1, "num_workers: must be >= 0, got -1"),
        ("max_size", -5, "max_size: must be >= 0 or null, got -5"),
        ("batching", "sorted", "batching: must be one of padded, dynamic, bucket, tokens, got 'sorted'"),
    ],
)
def test_bad_values_name_the_key(corpus: dict[str, str], key: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as error:
        make_module(corpus, **{key: value})
    assert str(error.value) == message


def test_empty_training_split_is_a_data_error(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path)
    write(tmp_path / "train.de.gz", ["", "x"])
    write(tmp_path / "train.en.gz", ["y", " "])
    with pytest.raises(DataError, match=r"train\.de\.gz: no usable sentence pairs with .*train\.en\.gz \(2 empty"):
        make_module(paths).setup("fit")


def test_padded_mode_uses_fixed_width(corpus: dict[str, str]) -> None:
    module = make_module(corpus, batching="padded", max_len=6)
    module.setup("fit")
    shapes = {(tuple(b.src.shape[1:]), tuple(b.tgt.shape[1:])) for b in module.train_dataloader()}
    assert shapes == {((7,), (8,))}


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`", "ignore:.*LeafSpec.*:DeprecationWarning")
def test_lightning_fit_reshuffles_and_checkpoint_loads_weights_only(corpus: dict[str, str], tmp_path: Path) -> None:
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.epochs: list[list[int]] = []

        def on_train_epoch_start(self) -> None:
            self.epochs.append([])

        def training_step(self, batch, batch_idx: int) -> torch.Tensor:
            self.epochs[-1].extend(batch.ids.tolist())
            return (self.weight * batch.src.float().mean()).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = make_module(corpus, batch_size=1, batching="dynamic", seed=7)
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(recorder, datamodule=module)
    assert [sorted(e) for e in recorder.epochs] == [[0, 1, 2, 3]] * 3
    assert len({tuple(e) for e in recorder.epochs}) > 1  # Lightning's set_epoch reached our sampler
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["TextDataModule"] == module.state_dict()


def test_multi30k_config_composes_and_builds() -> None:
    conf = REPO / "conf"
    if not (conf / "data" / "multi30k.yaml").is_file():
        pytest.skip(f"no conf/data/multi30k.yaml under {REPO}")
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["data=multi30k", "seed=5", f"paths.data_dir={MULTI30K.parent}"])
    assert cfg.objective._target_ == "dlrun.objectives.translation.TranslationModule"  # the data picks its objective
    module = instantiate(cfg.data)
    assert isinstance(module, TextDataModule)
    assert module.seed == 5 and module.batching == "bucket" and module.batch_size == 128
    assert module.paths["test"] == (str(MULTI30K / "test_2016_flickr.de.gz"), str(MULTI30K / "test_2016_flickr.en.gz"))
