"""Small trained runs shared by the tests of eval, predict, load and inspect: each trained once per test session.

Training happens in-process through ``dlrun.run`` (the CLI's exact config composition), so the tests that
share a run pay for Lightning's import and the training once.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import DATA

_CACHE: dict[str, TrainedRun] = {}

# A corpus small enough to train on in a second: numbers and colours, "German" -> "English".
_DE = ["ein", "zwei", "drei", "rot", "blau", "grün", "hund", "katze", "haus", "baum"]
_EN = ["one", "two", "three", "red", "blue", "green", "dog", "cat", "house", "tree"]


@dataclass
class TrainedRun:
    """Where a finished training run left its records."""

    root: Path
    uri: str
    run_id: str
    output_dir: Path
    metrics: dict[str, float]
    overrides: list[str]

    @property
    def best_checkpoint(self) -> Path:
        """The best (non-last) checkpoint in the run dir."""
        return next(p for p in sorted((self.output_dir / "checkpoints").glob("*.ckpt")) if p.name != "last.ckpt")

    def client(self) -> Any:
        """An MLflow client on the run's store."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


def common(root: Path, name: str) -> list[str]:
    """Overrides every in-process job needs: data dir, its own store and run dir."""
    return [f"paths.data_dir={DATA}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"hydra.run.dir={root / name}"]


def _train(key: str, root: Path, overrides: list[str]) -> TrainedRun:
    import dlrun

    if key in _CACHE:
        return _CACHE[key]
    root.mkdir(parents=True, exist_ok=True)
    full = [*overrides, *common(root, "train")]
    dlrun.run(full)
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (run,) = [r for r in runs if r.data.tags.get("dlrun.task") == "train"]
    _CACHE[key] = TrainedRun(root, uri, run.info.run_id, root / "train", dict(run.data.metrics), full)
    return _CACHE[key]


def trained_mnist(root: Path) -> TrainedRun:
    """MNIST MLP, one short epoch, MLflow model logged, histograms on."""
    return _train(
        "mnist",
        root / "mnist",
        [
            "model=mlp",
            "model.hidden_sizes=[64]",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=30",
            "trainer.limit_val_batches=2",
            "callbacks.histograms=true",
        ],
    )


def write_corpus(folder: Path) -> dict[str, Path]:
    """Six gzipped files of a tiny parallel corpus (train 60, val 8, test 8 pairs)."""
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, size in (("train", 60), ("val", 8), ("test", 8)):
        pairs = []
        for _ in range(size):
            ids = [rng.randrange(len(_DE)) for _ in range(rng.randint(1, 4))]
            pairs.append((" ".join(_DE[i] for i in ids), " ".join(_EN[i] for i in ids)))
        for side, column in (("src", 0), ("tgt", 1)):
            path = folder / f"{split}.{side}.gz"
            with gzip.open(path, "wt", encoding="utf-8") as handle:
                handle.write("".join(pair[column] + "\n" for pair in pairs))
            paths[f"{split}_{side}"] = path
    return paths


def trained_text(root: Path) -> TrainedRun:
    """A tiny GRU seq2seq on ``write_corpus`` data (``data=text``), one epoch."""
    files = write_corpus(root / "text" / "corpus")
    return _train(
        "text",
        root / "text",
        [
            "data=text",
            "model=seq2seq",
            *[f"data.{key}={path}" for key, path in files.items()],
            "data.batch_size=16",
            "data.min_freq=1",
            "model.emb_size=16",
            "model.hidden_size=16",
            "objective.max_decode_len=8",
            "objective.beam_size=2",
            "objective.num_samples=2",
            "trainer.max_epochs=1",
        ],
    )
