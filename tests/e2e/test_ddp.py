"""Data-parallel training with 2 CPU processes (gloo): one MLflow run, metrics reduced over ranks, one
checkpoint, the same accuracy as one process at the same global batch; and DDP jobs inside a sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import DATA, all_runs, dlrun, dlrun_many, store_uri

# Dropout off and the same seed: two ranks of 64 see exactly the samples one process sees in a batch of 128
# (the batch sampler deals consecutive batches to the ranks), so the runs differ only by float rounding.
COMMON = [
    "model.hidden_sizes=[128]",
    "model.dropout=0.0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=30",
    "data.eval_batch_size=500",  # 10 val / 20 test batches: every example lands on a rank
    "tracking.log_model=false",
    "callbacks.plots=false",
]
DDP = ["trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=64"]
SINGLE = ["data.batch_size=128"]


def accuracy(checkpoint: Path, split: str) -> float:
    """Accuracy of a checkpoint's network on a whole MNIST split, computed here in one process."""
    from dlrun.config.build import build
    from dlrun.data.mnist import MNISTDataModule, normalize

    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = saved["dlrun"]["config"]
    net = build(OmegaConf.create(config["model"]), "model", input_shape=[1, 28, 28], num_classes=10)
    net.load_state_dict({k.removeprefix("net."): v for k, v in saved["state_dict"].items() if k.startswith("net.")})
    data = MNISTDataModule(str(DATA), seed=config["data"]["seed"], val_size=config["data"]["val_size"])
    data.setup()
    images, labels = data.splits[split][list(range(len(data.splits[split])))]
    with torch.no_grad():
        return (net.eval()(normalize(images)).argmax(-1) == labels).float().mean().item()


@pytest.mark.slow  # two DDP processes and a reference run (about 25 s); tests/e2e/test_cluster.py covers DDP too
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path: Path) -> None:
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir(), single_dir.mkdir()
    ddp_uri, single_uri = store_uri(ddp_dir), store_uri(single_dir)
    results = dlrun_many(
        {
            "ddp": ([*DDP, *COMMON, f"tracking.uri={ddp_uri}"], ddp_dir),
            "single": ([*SINGLE, *COMMON, f"tracking.uri={single_uri}"], single_dir),
        }
    )
    for result in results.values():
        assert result.returncode == 0, result.describe()
    assert "MEMBER: 2/2" in results["ddp"].stdout + results["ddp"].stderr

    # Exactly one run, by rank 0, with one best checkpoint.
    (run,) = all_runs(ddp_uri)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert {"val/acc", "test/acc", "val/loss", "test/loss"} <= set(metrics)
    from mlflow.tracking import MlflowClient

    assert [a.path for a in MlflowClient(ddp_uri).list_artifacts(run.info.run_id, "checkpoints")] == [
        "checkpoints/epoch000.ckpt"
    ]
    run_dir = Path(run.data.tags["dlrun.output_dir"])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran this job, in this job's directory

    # Validation and test metrics cover both ranks' shares: they equal the whole split computed here.
    best = run_dir / "checkpoints" / "epoch000.ckpt"
    assert metrics["val/acc"] == pytest.approx(accuracy(best, "val"), abs=4e-4)
    assert metrics["test/acc"] == pytest.approx(accuracy(best, "test"), abs=4e-4)

    # Same global batch on one process: same accuracy within one point.
    (single,) = all_runs(single_uri)
    assert abs(metrics["test/acc"] - single.data.metrics["test/acc"]) < 0.01
    assert abs(metrics["val/acc"] - single.data.metrics["val/acc"]) < 0.01


@pytest.mark.slow
def test_ddp_jobs_inside_a_sweep(tmp_path: Path) -> None:
    uri = store_uri(tmp_path)
    limits = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    result = dlrun(["-m", *DDP, "model=mlp,cnn", *COMMON[2:], *limits, f"tracking.uri={uri}"], tmp_path)
    assert result.returncode == 0, result.describe()
    runs = all_runs(uri)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    assert all(r.info.status == "FINISHED" and "test/acc" in r.data.metrics for r in children)
    # Each job's rank 1 joined that job (no child process started a sweep of its own).
    assert result.stdout.count("Launching 2 jobs locally") + result.stderr.count("Launching 2 jobs locally") == 1
    for child in children:
        assert (Path(child.data.tags["dlrun.output_dir"]) / "train_ddp_process_1.log").is_file()


@pytest.mark.slow
def test_seq2seq_under_ddp_reduces_loss_and_bleu_over_ranks(tmp_path: Path) -> None:
    uri = store_uri(tmp_path)
    small = ["experiment=multi30k_gru_attn", "model.emb_size=32", "model.hidden_size=32", "objective.beam_size=2"]
    limits = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]
    result = dlrun(
        [*DDP, *small, *limits, "trainer.limit_test_batches=2", "tracking.log_model=false", f"tracking.uri={uri}"],
        tmp_path,
    )
    assert result.returncode == 0, result.describe()
    (run,) = all_runs(uri)
    assert run.info.status == "FINISHED"
    assert {"val/ppl", "val/bleu", "test/ppl", "test/bleu", "train/tokens_per_s"} <= set(run.data.metrics)
