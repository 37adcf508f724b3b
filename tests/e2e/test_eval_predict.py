"""task=eval and task=predict on checkpoints named by path, run id or runs:/ID (MNIST and a tiny seq2seq)."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest
import torch

from dlrun.data.errors import DataError
from dlrun.tasks.checkpoints import CheckpointError
from dlrun.tracking.artifacts import RunNotFound
from helpers import MNIST, dlrun
from trained_runs import TrainedRun, common, trained_mnist, trained_text


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    return trained_mnist(tmp_path_factory.getbasetemp() / "shared_runs")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    return trained_text(tmp_path_factory.getbasetemp() / "shared_runs")


def _runs_by_task(run: TrainedRun, task: str) -> list:
    client = run.client()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r for r in runs if r.data.tags.get("dlrun.task") == task]


def test_eval_by_run_id_reproduces_test_metrics(mnist_run: TrainedRun) -> None:
    """`dlrun task=eval model=mlp ckpt=<run id>`: a new FINISHED run, tagged with its source, same test metrics."""
    out = mnist_run.root / "eval_cli"
    args = [
        "task=eval",
        "model=mlp",
        f"ckpt={mnist_run.run_id}",
        f"tracking.uri={mnist_run.uri}",
        f"hydra.run.dir={out}",
    ]
    result = dlrun(args, mnist_run.root)
    assert result.returncode == 0, result.describe()
    (run,) = [r for r in _runs_by_task(mnist_run, "eval") if r.data.tags["dlrun.output_dir"] == str(out)]
    assert run.info.run_id != mnist_run.run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "mnist-mlp-eval"
    assert run.data.tags["dlrun.source_run_id"] == mnist_run.run_id
    assert run.data.metrics["test/acc"] == mnist_run.metrics["test/acc"]
    assert run.data.metrics["test/loss"] == mnist_run.metrics["test/loss"]
    assert run.data.params["model.hidden_sizes"] == "[64]"  # the source's config, not the shipped default
    assert f"test/acc {mnist_run.metrics['test/acc']:.6g}" in result.stdout


def test_eval_on_val_split_by_checkpoint_path(mnist_run: TrainedRun) -> None:
    """`split=val` with a checkpoint path: validation metrics of the (one-epoch) source run, exactly."""
    import dlrun as api

    metrics = api.run(
        ["task=eval", f"ckpt={mnist_run.best_checkpoint}", "split=val", *common(mnist_run.root, "eval_val")]
    )
    assert metrics["val/acc"] == mnist_run.metrics["val/acc"]
    (run,) = [r for r in _runs_by_task(mnist_run, "eval") if r.data.tags["dlrun.output_dir"].endswith("eval_val")]
    assert run.data.tags["dlrun.source_run_id"] == mnist_run.run_id  # recorded in the checkpoint itself


def test_eval_errors_name_the_checkpoint(mnist_run: TrainedRun) -> None:
    """A missing file and an unknown run id each stop with one line naming them."""
    import dlrun as api

    with pytest.raises(CheckpointError, match=r"^ckpt=nowhere/x\.ckpt: no such checkpoint file"):
        api.run(["task=eval", "ckpt=nowhere/x.ckpt", *common(mnist_run.root, "eval_bad")])
    unknown = "0" * 32
    with pytest.raises(RunNotFound, match=rf"^ckpt={unknown}: no MLflow run with this id"):
        api.run(["task=eval", f"ckpt=runs:/{unknown}", *common(mnist_run.root, "eval_bad2")])


def test_predict_test_split_csv(mnist_run: TrainedRun) -> None:
    """One row per test image: index, predicted label, its probability; the file is a run artifact."""
    import dlrun as api
    from dlrun.data.idx import read_idx
    from dlrun.data.mnist import normalize

    rows = api.run(["task=predict", f"ckpt=runs:/{mnist_run.run_id}", *common(mnist_run.root, "predict")])
    path = mnist_run.root / "predict" / "predictions.csv"
    with path.open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) == 10000
    assert list(table[0]) == ["index", "label", "probability"]
    module, _ = api.load(mnist_run.best_checkpoint)
    with torch.no_grad():
        probs = module(normalize(read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[:100])).softmax(-1)
    assert [int(r["label"]) for r in table[:100]] == probs.argmax(-1).tolist()
    assert all(0.1 <= float(r["probability"]) <= 1.0 for r in table)
    (run,) = _runs_by_task(mnist_run, "predict")
    assert [a.path for a in mnist_run.client().list_artifacts(run.info.run_id, "predictions")] == [
        "predictions/predictions.csv"
    ]


def test_predict_png_folder(mnist_run: TrainedRun, tmp_path: Path) -> None:
    """28x28 PNGs (grayscale or colour) get the labels their test-set originals get; other sizes are refused."""
    from PIL import Image

    import dlrun as api
    from dlrun.data.idx import read_idx
    from dlrun.data.mnist import normalize

    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[:3].numpy()
    folder = tmp_path / "digits"
    folder.mkdir()
    for k, image in enumerate(images):
        Image.fromarray(image).convert("RGB" if k == 1 else "L").save(folder / f"digit{k}.png")
    out = tmp_path / "out.csv"
    rows = api.run(
        [
            "task=predict",
            f"ckpt={mnist_run.best_checkpoint}",
            f"input={folder}",
            f"output={out}",
            *common(mnist_run.root, "predict_png"),
        ]
    )
    assert [r["file"] for r in rows] == ["digit0.png", "digit1.png", "digit2.png"]
    assert out.read_text().splitlines()[0] == "index,file,label,probability"
    module, _ = api.load(mnist_run.best_checkpoint)
    with torch.no_grad():
        expected = module(normalize(torch.from_numpy(images))).argmax(-1).tolist()
    assert [r["label"] for r in rows] == expected
    Image.new("L", (20, 28)).save(folder / "small.png")
    with pytest.raises(DataError, match=r"small\.png: image is 20x28, expected 28x28"):
        api.run(["task=predict", f"ckpt={mnist_run.best_checkpoint}", f"input={folder}", *common(mnist_run.root, "p3")])


def test_text_eval_and_translate(
    text_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seq2seq: eval reproduces test BLEU/loss; predict translates a file and stdin with the checkpoint's vocabulary."""
    import dlrun as api
    from dlrun.data.text_input import source_batches

    groups = ["data=text", "model=seq2seq"]
    metrics = api.run(["task=eval", f"ckpt={text_run.run_id}", *groups, *common(text_run.root, "eval")])
    assert metrics["test/bleu"] == text_run.metrics["test/bleu"]
    assert metrics["test/loss"] == text_run.metrics["test/loss"]

    lines = ["ein hund", "zwei rote katzen", "", "baum"]
    source = tmp_path / "de.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "en.txt"
    translations = api.run(
        [
            "task=predict",
            f"ckpt={text_run.best_checkpoint}",
            f"input={source}",
            f"output={out}",
            "objective.decode=greedy",
            *groups,
            *common(text_run.root, "translate"),
        ]
    )
    assert out.read_text(encoding="utf-8").splitlines() == translations and len(translations) == 4

    loaded = api.load(text_run.best_checkpoint)
    dm = loaded.datamodule
    expected = [""] * len(lines)
    with torch.no_grad():
        for batch in source_batches(lines, dm.src_vocab, 16):
            tokens = loaded.module.translate(batch.src, batch.src_lengths, "greedy")
            for row, line in enumerate(batch.ids.tolist()):
                expected[line] = dm.detokenize(dm.tgt_vocab.decode(tokens[row]))
    assert translations == expected

    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("ein hund\nbaum\n"))
    piped = api.run(
        [
            "task=predict",
            f"ckpt={text_run.best_checkpoint}",
            "objective.decode=greedy",
            *groups,
            *common(text_run.root, "translate_stdin"),
        ]
    )
    assert capsys.readouterr().out == f"{piped[0]}\n{piped[1]}\n"  # stdout carries the translations only
    assert piped == [expected[0], expected[3]]
