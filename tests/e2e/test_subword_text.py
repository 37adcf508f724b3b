"""``data.tokenizer=bpe`` end to end on the real Multi30k: a tiny translation run, then eval by its checkpoint,
predict and resume; a tiny BPE language model; bad settings. Every job runs in this process
(``helpers.dlrun_in_process``: ``dlrun.run`` and the CLI's error mapping)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import DATA, MULTI30K, Result, all_runs, dlrun_in_process, store_uri

pytestmark = pytest.mark.skipif(not (MULTI30K / "train.en.gz").is_file(), reason="Multi30k not found")

TINY = [
    "experiment=multi30k_gru_attn",
    "data.tokenizer=bpe",
    "data.vocab_size=1000",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=40",  # enough to say "a a a ...": pieces with a space in them (▁a)
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",  # BLEU over the first 32 test sentences
    "model.emb_size=32",
    "model.hidden_size=32",
    "objective.decode=greedy",
    "objective.max_decode_len=20",
    "objective.num_samples=2",
    "optimizer.lr=0.01",
    f"paths.data_dir={DATA}",
]


def _args(root: Path, name: str) -> list[str]:
    return [f"tracking.uri={store_uri(root)}", f"hydra.run.dir={root / name}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny BPE translation run: its result, run record and best checkpoint (read before any later job)."""
    root = tmp_path_factory.mktemp("bpe")
    result = dlrun_in_process([*TINY, *_args(root, "train")], root)
    assert result.returncode == 0, result.describe()
    [run] = all_runs(store_uri(root))
    best = next(p for p in sorted((root / "train" / "checkpoints").glob("*.ckpt")) if p.name != "last.ckpt")
    return {"root": root, "result": result, "run": run, "best": best, "state": _datamodule_state(best)}


def _datamodule_state(path: Path) -> dict[str, Any]:
    """The text data module's state inside a Lightning checkpoint."""
    checkpoint = torch.load(path, weights_only=True)
    return checkpoint["TextDataModule"]


def test_run_records_the_tokenizers_and_bleu_of_plain_text(trained: dict[str, Any]) -> None:
    """The checkpoint and the artifacts hold both subword models; test/bleu is sacrebleu on detokenized text."""
    import sentencepiece
    from mlflow.tracking import MlflowClient
    from sacrebleu.metrics import BLEU

    import dlrun as api

    run, root = trained["run"], trained["root"]
    assert run.info.status == "FINISHED" and run.data.params["data.tokenizer"] == "bpe"
    state = trained["state"]
    assert len(state["src_vocab"]) == len(state["tgt_vocab"]) == 1000
    assert {state["tokenizers"][side]["kind"] for side in ("src_vocab", "tgt_vocab")} == {"bpe"}
    client = MlflowClient(tracking_uri=store_uri(root))
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id, "vocab"))
    assert names == [
        "vocab/src_tokenizer.model",
        "vocab/src_vocab.txt",
        "vocab/tgt_tokenizer.model",
        "vocab/tgt_vocab.txt",
    ]
    model = sentencepiece.SentencePieceProcessor(
        model_file=client.download_artifacts(run.info.run_id, "vocab/tgt_tokenizer.model")
    )
    assert [model.id_to_piece(i) for i in range(model.get_piece_size())] == state["tgt_vocab"]

    loaded = api.load(trained["best"])
    dm = loaded.datamodule
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        tokens = loaded.module.translate(batch.src, batch.src_lengths, "greedy")
    pieces = [dm.tgt_vocab.decode(row) for row in tokens]
    hypotheses = [dm.detokenize(p) for p in pieces]
    references = [dm.references("test")[i] for i in batch.ids.tolist()]
    assert len(hypotheses) == 32 and not any("▁" in h for h in hypotheses)
    assert any("▁" in "".join(p) for p in pieces)  # the model's own output is pieces; BLEU sees them joined
    plain = BLEU(lowercase=True).corpus_score(hypotheses, [references]).score
    assert run.data.metrics["test/bleu"] == pytest.approx(plain, abs=1e-4)
    as_pieces = BLEU(lowercase=True).corpus_score([" ".join(p) for p in pieces], [references]).score
    assert as_pieces != pytest.approx(plain, abs=1e-4)  # the check above can tell the two apart
    samples = (root / "train" / "samples" / "epoch_000.txt").read_text(encoding="utf-8")
    assert [line for line in samples.splitlines() if "hypothesis:" in line and "▁" in line] == []


def test_eval_by_checkpoint_reproduces_the_bleu(trained: dict[str, Any]) -> None:
    """``task=eval ckpt=PATH`` restores the checkpoint's tokenizers and gives the training run's test metrics."""
    import dlrun as api

    root = trained["root"]
    metrics = api.run(["task=eval", f"ckpt={trained['best']}", f"paths.data_dir={DATA}", *_args(root, "eval")])
    assert metrics["test/bleu"] == trained["run"].data.metrics["test/bleu"]
    assert metrics["test/loss"] == trained["run"].data.metrics["test/loss"]


def test_predict_writes_plain_text(trained: dict[str, Any], tmp_path: Path) -> None:
    """``task=predict`` translates typed German through the source's BPE model and writes detokenized English."""
    import dlrun as api

    with gzip.open(MULTI30K / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as handle:
        lines = [next(handle).strip() for _ in range(4)]
    source, out = tmp_path / "de.txt", tmp_path / "en.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["task=predict", f"ckpt={trained['best']}", f"input={source}", f"output={out}", f"paths.data_dir={DATA}"]
    translations = api.run([*args, *_args(trained["root"], "predict")])
    assert out.read_text(encoding="utf-8").splitlines() == translations and len(translations) == 4
    assert not any("▁" in t for t in translations)

    loaded = api.load(trained["best"])
    dm = loaded.datamodule
    expected = []
    with torch.no_grad():
        for line in lines:
            src = torch.tensor([[*dm.src_vocab.encode(dm.tokenizers["src_vocab"].tokenize(line)), 3]])
            tokens = loaded.module.translate(src, torch.tensor([src.size(1)]), "greedy")
            expected.append(dm.tokenizers["tgt_vocab"].detokenize(dm.tgt_vocab.decode(tokens[0])))
    assert translations == expected


@pytest.mark.slow  # one more training
def test_resume_keeps_the_tokenizer(trained: dict[str, Any]) -> None:
    """Training on from the run (one more epoch) keeps the checkpoint's subword models and vocabularies."""
    import dlrun as api

    root = trained["root"]
    api.run([*TINY, "trainer.max_epochs=2", f"resume={trained['run'].info.run_id}", *_args(root, "train")])
    last = torch.load(root / "train" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # the second epoch ran
    assert _datamodule_state(root / "train" / "checkpoints" / "last.ckpt") == trained["state"]


def test_language_model_with_bpe_trains(tmp_path: Path) -> None:
    """``experiment=multi30k_lm data.tokenizer=bpe``: a model over 800 pieces, samples in plain text."""
    from mlflow.tracking import MlflowClient

    args = [
        "experiment=multi30k_lm",
        "data.tokenizer=bpe",
        "data.vocab_size=800",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=8",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "model.emb_size=32",
        "model.hidden_size=32",
        "objective.max_new_tokens=8",
        "optimizer.lr=0.01",
        f"paths.data_dir={DATA}",
        *_args(tmp_path, "lm"),
    ]
    result = dlrun_in_process(args, tmp_path)
    assert result.returncode == 0, result.describe()
    [run] = all_runs(store_uri(tmp_path))
    assert run.info.status == "FINISHED"
    assert 1.0 < run.data.metrics["test/ppl"] < 800  # better than a uniform guess among the 800 pieces
    client = MlflowClient(tracking_uri=store_uri(tmp_path))
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id, "vocab"))
    assert names == ["vocab/tokenizer.model", "vocab/vocab.txt"]
    samples = (tmp_path / "lm" / "samples" / "epoch_000.txt").read_text(encoding="utf-8").splitlines()
    assert samples[1] == "prompt: 'a man'" and samples[2].startswith("  a man") and "▁" not in "".join(samples)
    state = torch.load(tmp_path / "lm" / "checkpoints" / "last.ckpt", weights_only=True)["LanguageModelDataModule"]
    assert len(state["vocab"]) == 800 and state["tokenizers"]["vocab"]["kind"] == "bpe"


@pytest.mark.parametrize(
    ("preset", "override", "line"),
    [
        (
            "multi30k_gru_attn",
            "data.tokenizer=bogus",
            "data.tokenizer: expected one of 'word', 'bpe', 'unigram', got 'bogus'",
        ),
        ("multi30k_lm", "data.vocab_size=0", "data.vocab_size: must be >= 5, got 0"),
    ],
)
def test_bad_settings_stop_before_any_run(preset: str, override: str, line: str, tmp_path: Path) -> None:
    result = dlrun_in_process([f"experiment={preset}", "data.tokenizer=bpe", override, *_args(tmp_path, "x")], tmp_path)
    assert result.returncode == 2 and result.error == line, result.describe()
    assert all_runs(store_uri(tmp_path)) == []


def test_a_size_the_data_cannot_give_fails_the_run_naming_the_key(tmp_path: Path) -> None:
    """Known only once the training split is read: the run is marked FAILED with one line naming data.vocab_size."""
    result: Result = dlrun_in_process(
        ["experiment=multi30k_gru_attn", "data.tokenizer=unigram", "data.vocab_size=30", f"paths.data_dir={DATA}"]
        + _args(tmp_path, "x"),
        tmp_path,
    )
    error = result.error
    assert error.startswith("data.vocab_size: 30 cannot hold the training split's characters"), error
    assert result.returncode == 1  # a data error inside a started run, as for an undecodable corpus
    [run] = all_runs(store_uri(tmp_path))
    assert run.info.status == "FAILED"
