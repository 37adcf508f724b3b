"""``dlrun experiment=multi30k_gru_attn`` end to end on the real Multi30k, and the text data errors at the CLI.

The training runs as a ``dlrun`` process, from the session's start (``helpers.early``); the two broken corpora
run in this process (``helpers.dlrun_in_process``: ``dlrun.run`` and the CLI's error mapping).
test_bad_inputs.py runs the undecodable corpus by the command too (exit status, stderr one line).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers import MULTI30K, Result, all_runs, dlrun, dlrun_many, early, store_uri, text_args

pytestmark = pytest.mark.usefixtures("multi30k_dir")  # missing Multi30k fails loudly, as missing MNIST does


TRAIN = [
    "experiment=multi30k_gru_attn",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=2",
    # A smaller network and shorter decoding keep this a pipeline check of seconds, not minutes.
    "model.emb_size=64",
    "model.hidden_size=128",
    "objective.beam_size=2",
    "objective.max_decode_len=30",
]


@early
def train_preset(folder: Path) -> Result:
    """The short training of the preset, a ``dlrun`` process, from the session's start (``helpers.early``)."""
    return dlrun([*TRAIN, f"tracking.uri={store_uri(folder)}"], folder)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, early_result: Callable) -> dict[str, Result]:
    """The training of the preset (an early job), and two runs on broken corpora in this process."""
    root = tmp_path_factory.mktemp("s2s")
    for name in ("misaligned", "latin1"):
        (root / name).mkdir()
    misaligned = root / "misaligned" / "short.en"
    misaligned.write_text("a man .\na dog .\n", encoding="utf-8")
    latin1 = root / "latin1" / "bad.de"
    latin1.write_bytes(b"ein mann .\n" + "ein gr\xfcner raum .\n".encode("latin-1"))
    jobs = {
        "misaligned": (
            [*text_args(MULTI30K / "val.de.gz", misaligned), f"tracking.uri={store_uri(root / 'misaligned')}"],
            root / "misaligned",
        ),
        "latin1": (
            [*text_args(latin1, MULTI30K / "val.en.gz"), f"tracking.uri={store_uri(root / 'latin1')}"],
            root / "latin1",
        ),
    }
    out = dlrun_many(jobs, in_process=set(jobs))
    out["train"] = early_result(train_preset)
    return out


def test_preset_records_a_finished_run_with_translation_metrics(results: dict[str, Result]) -> None:
    from mlflow.tracking import MlflowClient

    result = results["train"]
    assert result.returncode == 0, result.describe()
    uri = store_uri(results["train"].cwd)
    [run] = all_runs(uri)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "multi30k_gru_attn"
    metrics = run.data.metrics
    for name in ("train/loss", "val/loss", "val/ppl", "val/bleu", "test/bleu", "test/ppl", "train/tokens_per_s"):
        assert name in metrics, sorted(metrics)
    # Length bucketing keeps padding low even over a handful of batches.
    assert 0.0 < metrics["train/pad_fraction"] < 0.15
    # Six steps already beat guessing uniformly over the target vocabulary (perplexity = its size, 5975 words):
    # measured val/ppl 3640. An untrained or mis-normalised perplexity (per batch, per sentence) lands above.
    tgt_words = len(
        Path(MlflowClient(tracking_uri=uri).download_artifacts(run.info.run_id, "vocab/tgt_vocab.txt"))
        .read_text()
        .split()
    )
    assert tgt_words > 5000
    assert metrics["val/ppl"] < 0.8 * tgt_words, (metrics["val/ppl"], tgt_words)
    assert metrics["test/ppl"] < 0.8 * tgt_words
    # Beam decoding at test time also reports greedy BLEU on the same sentences (decode=beam in the preset).
    assert "test/bleu_greedy" in metrics
    assert run.data.params["data.batching"] == "bucket"
    assert run.data.tags["dlrun.bleu_signature"].startswith("nrefs:1|case:lc")


def test_preset_logs_attention_plots_samples_and_vocabularies(results: dict[str, Result]) -> None:
    from mlflow.tracking import MlflowClient

    uri = store_uri(results["train"].cwd)
    [run] = all_runs(uri)
    client = MlflowClient(tracking_uri=uri)
    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots/epoch_000")]
    assert len(plots) == 8 and all(p.endswith(".png") for p in plots)
    png = Path(client.download_artifacts(run.info.run_id, plots[0]))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sample = Path(client.download_artifacts(run.info.run_id, "samples/epoch_000.txt")).read_text()
    assert sample.count("reference:") == 8 and "hypothesis:" in sample
    vocab = Path(client.download_artifacts(run.info.run_id, "vocab/tgt_vocab.txt")).read_text().split("\n")
    assert vocab[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]


def test_checkpoint_holds_the_vocabulary_and_loads_weights_only(results: dict[str, Result]) -> None:
    from mlflow.tracking import MlflowClient

    uri = store_uri(results["train"].cwd)
    [run] = all_runs(uri)
    client = MlflowClient(tracking_uri=uri)
    [ckpt] = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints") if a.path.endswith(".ckpt")]
    checkpoint = torch.load(client.download_artifacts(run.info.run_id, ckpt), weights_only=True)
    state = checkpoint["TextDataModule"]
    assert state["tgt_vocab"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert len(state["src_vocab"]) == checkpoint["state_dict"]["net.src_embed.weight"].shape[0]


def test_misaligned_files_name_both_files_and_counts(results: dict[str, Result]) -> None:
    result = results["misaligned"]
    assert result.returncode == 1, result.describe()
    line = result.error
    assert "val.de.gz" in line and "short.en" in line
    assert "1014" in line and "2" in line
    [run] = all_runs(store_uri(results["misaligned"].cwd))
    assert run.info.status == "FAILED"


def test_undecodable_bytes_name_the_file_and_line(results: dict[str, Result]) -> None:
    result = results["latin1"]
    assert result.returncode == 1, result.describe()
    line = result.error
    assert "bad.de:2: not valid UTF-8" in line  # file:line, as compilers name them
    assert "Traceback" not in result.stderr
