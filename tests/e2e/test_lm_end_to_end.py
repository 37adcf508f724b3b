"""``dlrun experiment=multi30k_lm`` end to end on the real Multi30k (tiny limits), then predict and eval on its run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers import MULTI30K, Result, all_runs, dlrun, dlrun_in_process, dlrun_many, early, store_uri

pytestmark = pytest.mark.skipif(not (MULTI30K / "train.en.gz").is_file(), reason="Multi30k not found")

TINY = [
    "experiment=multi30k_lm",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=3",
    "trainer.log_every_n_steps=2",
    "model.emb_size=32",
    "model.hidden_size=32",
    "objective.max_new_tokens=8",
]


@early
def train_preset(folder: Path) -> Result:
    """The tiny training of the preset, a ``dlrun`` process, from the session's start (``helpers.early``)."""
    return dlrun([*TINY, f"tracking.uri={store_uri(folder)}"], folder)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, early_result: Callable) -> dict[str, Result]:
    """The training of the preset (an early job) and one run on an undecodable corpus, in this process."""
    root = tmp_path_factory.mktemp("lm")
    (root / "latin1").mkdir()
    latin1 = root / "latin1" / "bad.en"
    latin1.write_bytes(b"a man .\n" + "a gr\xfcn room .\n".encode("latin-1"))
    args = ["experiment=multi30k_lm", f"data.train={latin1}", f"tracking.uri={store_uri(root / 'latin1')}"]
    return {"latin1": dlrun_in_process(args, root / "latin1"), "train": early_result(train_preset)}


def test_preset_records_perplexities_samples_vocabulary_and_state(results: dict[str, Result]) -> None:
    from mlflow.tracking import MlflowClient

    result = results["train"]
    assert result.returncode == 0, result.describe()
    uri = store_uri(results["train"].cwd)
    [run] = all_runs(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == "multi30k_lm"
    metrics = run.data.metrics
    for name in ("train/loss", "train/ppl", "val/loss", "val/ppl", "test/ppl", "train/tokens_per_s"):
        assert name in metrics, sorted(metrics)
    assert 1.0 < metrics["test/ppl"] < 6000  # better than guessing among the 5,975 types after 6 steps
    assert run.data.params["objective.stateful"] == "True" and run.data.params["model.impl"] == "layer"
    client = MlflowClient(tracking_uri=uri)
    samples = Path(client.download_artifacts(run.info.run_id, "samples/epoch_000.txt")).read_text().splitlines()
    assert samples[1] == "prompt: 'a man'" and samples[2].startswith("  a man")
    vocab = Path(client.download_artifacts(run.info.run_id, "vocab/vocab.txt")).read_text().split("\n")
    assert vocab[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and len(vocab) - 1 == 5975
    [ckpt] = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints") if a.path.endswith(".ckpt")]
    checkpoint = torch.load(client.download_artifacts(run.info.run_id, ckpt), weights_only=True)
    assert checkpoint["LanguageModelDataModule"]["vocab"] == vocab[:-1]
    assert checkpoint["dlrun_lm_state"]["state"][0].shape == (1, 20, 32)  # (layers, streams, hidden)


def test_undecodable_corpus_is_one_line_naming_file_and_line(results: dict[str, Result]) -> None:
    result = results["latin1"]
    assert result.returncode == 1, result.describe()
    assert "bad.en:2: not valid UTF-8" in result.error
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_predict_continues_prompts_and_eval_retests_the_run(results: dict[str, Result], tmp_path: Path) -> None:
    assert results["train"].returncode == 0
    uri = store_uri(results["train"].cwd)
    [run] = all_runs(uri)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Two dogs\nA woman in a red\n", encoding="utf-8")
    jobs = {
        "predict": (["task=predict", f"ckpt={run.info.run_id}", f"input={prompts}", f"tracking.uri={uri}"], tmp_path),
        "eval": (["task=eval", f"ckpt={run.info.run_id}", f"tracking.uri={uri}"], tmp_path),
    }
    out = dlrun_many(jobs)
    predict, evaluate = out["predict"], out["eval"]
    assert predict.returncode == 0, predict.describe()
    lines = predict.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("two dogs") and lines[1].startswith("a woman in a red")
    assert evaluate.returncode == 0, evaluate.describe()
    runs = {r.data.tags.get("dlrun.task", r.info.run_name): r for r in all_runs(uri)}
    tested = [r for r in all_runs(uri) if "test/ppl" in r.data.metrics and r.info.run_id != run.info.run_id]
    assert tested, sorted(runs)
    # The same checkpoint on the same test windows: the same perplexity as the training run's test.
    assert tested[0].data.metrics["test/ppl"] == pytest.approx(run.data.metrics["test/ppl"], rel=1e-4)
