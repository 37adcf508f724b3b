"""Language-model data: stream layout, consecutive windows, random bptt, DDP ranks, vocabulary, errors."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest
import torch

from dlrun.data.errors import DataError
from dlrun.data.lm import LanguageModelDataModule
from dlrun.data.streams import StreamWindows, WindowSampler, cut_streams, window_bounds
from dlrun.data.vocab import EOS_INDEX, UNK_INDEX

TRAIN = ["A dog runs.", "", "A cat sleeps.", "The dog and the cat play.", "A bird sings!"] * 4
VAL = ["A dog sleeps.", "A cow runs."]
TEST = ["The bird runs.", "A cat plays."]


def write(path: Path, lines: list[str]) -> str:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, str]:
    return {
        "train": write(tmp_path / "train.gz", TRAIN),
        "val": write(tmp_path / "val.txt", VAL),
        "test": write(tmp_path / "test.gz", TEST),
    }


def read_epoch(rows: torch.Tensor, sampler: WindowSampler) -> list:
    dataset = StreamWindows(rows)
    return [dataset[window] for window in sampler]


# ---------------------------------------------------------------- layout


def test_streams_are_contiguous_rows_and_ranks_take_disjoint_rows() -> None:
    ids = torch.arange(103)
    rows = cut_streams(ids, 4)
    assert rows.shape == (4, 25)
    assert rows[1].tolist() == list(range(25, 50))  # row i continues where row i - 1 ends
    ranks = [cut_streams(ids, 2, world_size=2, rank=r) for r in range(2)]
    assert torch.equal(torch.cat(ranks), rows)  # rank 0 rows 0-1, rank 1 rows 2-3: all of it, once


@pytest.mark.parametrize("random_bptt", [False, True])
def test_window_k_plus_1_continues_window_k_and_every_token_is_a_target_once(random_bptt: bool) -> None:
    ids = torch.randint(0, 50, (1000,))
    rows = cut_streams(ids, 7)
    for epoch in range(3):
        sampler = WindowSampler(rows.size(1), bptt=10, random_bptt=random_bptt, seed=3)
        sampler.set_epoch(epoch)
        batches = read_epoch(rows, sampler)
        assert len(batches) == len(sampler)  # the trainer's count holds every epoch
        assert batches[0].start == 0
        for prev, nxt in itertools.pairwise(batches):
            assert nxt.start == prev.end
            # The next window's first input is the previous window's last target, in every row.
            assert torch.equal(nxt.tokens[:, 0], prev.target[:, -1])
        inputs = torch.cat([b.tokens for b in batches], dim=1)
        targets = torch.cat([b.target for b in batches], dim=1)
        assert torch.equal(inputs, rows[:, :-1])
        assert torch.equal(targets, rows[:, 1:])  # each token after a row's first: a target exactly once


def test_random_bptt_varies_by_epoch_and_is_reproducible() -> None:
    sizes = {}
    for epoch in (0, 1):
        sampler = WindowSampler(2001, bptt=35, random_bptt=True, seed=5)
        sampler.set_epoch(epoch)
        sizes[epoch] = [size for _, size in sampler]
    assert sizes[0] != sizes[1]
    assert len(sizes[0]) == len(sizes[1]) == 58  # ceil(2000 / 35)
    assert sum(sizes[0]) == sum(sizes[1]) == 2000
    assert len(set(sizes[0])) > 5 and min(sizes[0]) >= 1
    again = WindowSampler(2001, bptt=35, random_bptt=True, seed=5)
    assert [size for _, size in again] == sizes[0]
    assert window_bounds(21, 10) == [(0, 10), (10, 10)]
    assert window_bounds(25, 10) == [(0, 10), (10, 10), (20, 4)]


# ---------------------------------------------------------------- the data module


def test_module_streams_are_sentences_with_eos_and_train_vocabulary(paths: dict[str, str]) -> None:
    dm = LanguageModelDataModule(**paths, batch_size=2, eval_batch_size=1, bptt=4, min_freq=2)
    dm.setup("fit")
    stream = dm.stream("train")
    sentences = [line for line in TRAIN if line]
    assert int((stream == EOS_INDEX).sum()) == len(sentences)  # empty lines skipped, one <eos> per sentence
    assert dm.decode(stream[:4]) == "a dog runs."
    val = dm.stream("val")
    assert (
        dm.vocab.itos[int(val[0])] == "a" and int(val[4]) == EOS_INDEX and int(val[6]) == UNK_INDEX
    )  # "cow" is not in the training split
    assert dm.dims == {"vocab_size": len(dm.vocab), "pad_index": 0, "bos_index": 2, "eos_index": 3}
    assert dm.data_files() == {split: [Path(p)] for split, p in paths.items()}
    batches = list(dm.train_dataloader())
    assert all(b.tokens.shape[0] == 2 for b in batches) and batches[0].start == 0
    rows = dm.rows("train")
    assert torch.equal(torch.cat([b.target for b in batches], dim=1), rows[:, 1:])


def test_ranks_read_their_own_rows(paths: dict[str, str]) -> None:
    dm = LanguageModelDataModule(**paths, batch_size=2, bptt=4)
    whole = dm.rows("train", world_size=1)
    per_rank = [dm.rows("train", world_size=2, rank=r) for r in range(2)]
    assert per_rank[0].shape == per_rank[1].shape == (2, dm.stream("train").numel() // 4)
    flat = torch.cat(per_rank).flatten()  # rank 0 holds the first half of the text, rank 1 the second
    assert torch.equal(flat, dm.stream("train")[: flat.numel()])
    assert whole.shape[0] == 2


def test_vocabulary_round_trips_through_state_dict_and_is_published(paths: dict[str, str], tmp_path: Path) -> None:
    from dlrun.contracts import RunContext

    dm = LanguageModelDataModule(**paths, min_freq=1)
    dm.setup("fit")
    state = dm.state_dict()
    assert isinstance(state["vocab"], list) and state["vocab"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    fresh = LanguageModelDataModule(**paths, min_freq=3)  # would build a smaller vocabulary
    fresh.load_state_dict(state)
    assert fresh.vocab == dm.vocab and torch.equal(fresh.stream("test"), dm.stream("test"))
    published = []
    callbacks = dm.run_callbacks(RunContext(tmp_path / "run", publish=lambda p, folder: published.append((p, folder))))
    assert callbacks == []
    assert published == [(tmp_path / "run" / "vocab" / "vocab.txt", "vocab")]
    assert published[0][0].read_text(encoding="utf-8").split("\n")[:-1] == dm.vocab.itos


def test_bad_input_gets_one_line_errors(paths: dict[str, str], tmp_path: Path) -> None:
    missing = LanguageModelDataModule(**{**paths, "val": str(tmp_path / "nope.txt")})
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        missing.setup("fit")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"a dog\n" + "a gr\xfcn dog\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt:2: not valid UTF-8 \(byte 0xfc at column 5\)"):
        LanguageModelDataModule(**{**paths, "train": str(bad)}).setup("fit")
    blank = write(tmp_path / "blank.txt", ["", "   "])
    with pytest.raises(DataError, match=r"blank\.txt: no words"):
        LanguageModelDataModule(**{**paths, "test": blank}).setup("test")
    tiny = LanguageModelDataModule(**paths, eval_batch_size=50)
    with pytest.raises(DataError, match=r"val\.txt: 10 tokens cannot fill 50 streams .*data\.eval_batch_size=50"):
        tiny.val_dataloader()
    with pytest.raises(ValueError, match="bptt: must be >= 1"):
        LanguageModelDataModule(**paths, bptt=0)
