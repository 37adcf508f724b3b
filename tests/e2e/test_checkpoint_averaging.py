"""``task=average``: the mean of a real MNIST run's last two epoch checkpoints is exactly the parameter mean,
tested and recorded in a new run that points at its source; the run's recorded test accuracy is the averaged
network's own on the 10k test images (computed here by hand); bad inputs stop in one line before any run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import MNIST, all_runs, dlrun_in_process, store_uri

TRAIN = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=1",
    "model.hidden_sizes=[32]",
    "checkpoint.save_top_k=-1",  # keep every epoch
    "tracking.log_model=false",
    "callbacks.plots=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, object]:
    """A two-epoch run that kept both epoch checkpoints: (folder, store uri, its MLflow run)."""
    folder = tmp_path_factory.mktemp("average")
    uri = store_uri(folder)
    result = dlrun_in_process([*TRAIN, f"tracking.uri={uri}"], folder)
    assert result.returncode == 0, result.describe()
    (run,) = all_runs(uri)
    return folder, uri, run


def test_the_average_of_two_epochs_is_their_parameter_mean_tested_in_a_new_run(trained: tuple) -> None:
    import dlrun
    from dlrun.data.mnist import load_split, normalize

    folder, uri, source = trained
    checkpoints = Path(source.data.tags["dlrun.output_dir"]) / "checkpoints"
    first, second = (torch.load(checkpoints / f"epoch00{e}.ckpt", weights_only=True)["state_dict"] for e in (0, 1))

    result = dlrun_in_process(
        ["task=average", f"ckpt={source.info.run_id}", "average.last=2", f"tracking.uri={uri}"], folder
    )
    assert result.returncode == 0, result.describe()
    assert "averaged the last 2 epoch checkpoints: epoch000.ckpt, epoch001.ckpt" in result.stdout
    runs = all_runs(uri)
    (averaged,) = [r for r in runs if r.info.run_id != source.info.run_id]
    assert averaged.info.status == "FINISHED" and averaged.info.run_name == "mnist-mlp-avg2"
    assert averaged.data.tags["dlrun.task"] == "average"
    assert averaged.data.tags["dlrun.source_run_id"] == source.info.run_id
    assert averaged.data.tags["dlrun.averaged"] == "last 2: epoch000.ckpt epoch001.ckpt"
    # The source run is only read.
    (again,) = [r for r in runs if r.info.run_id == source.info.run_id]
    assert again.data.metrics == source.data.metrics and again.data.tags == source.data.tags

    # Exactly the element-wise mean of the two epochs' parameters (and neither of them).
    path = Path(averaged.data.tags["dlrun.source_checkpoint"])
    assert path.name == "average.ckpt" and path.parent.parent == Path(averaged.data.tags["dlrun.output_dir"])
    mean = torch.load(path, weights_only=True)
    assert "optimizer_states" not in mean
    assert set(mean["state_dict"]) == set(first) and len(first) >= 4
    for name, value in mean["state_dict"].items():
        expected = ((first[name].double() + second[name].double()) / 2).to(first[name].dtype)
        assert torch.equal(value, expected), name
    weight = next(n for n in first if n.endswith("weight"))
    assert not torch.equal(mean["state_dict"][weight], first[weight])
    assert not torch.equal(mean["state_dict"][weight], second[weight])
    from mlflow.tracking import MlflowClient

    assert [a.path for a in MlflowClient(uri).list_artifacts(averaged.info.run_id, "checkpoints")] == [
        "checkpoints/average.ckpt"
    ]

    # The recorded test accuracy is the averaged network's, on all 10k test images.
    module = dlrun.load(path).module
    images, labels = load_split(MNIST, "t10k")
    with torch.no_grad():
        predicted = module(normalize(images)).argmax(dim=1)
    accuracy = (predicted == labels).double().mean().item()
    assert averaged.data.metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert averaged.data.metrics["test/acc"] != source.data.metrics["test/acc"]


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["average.last=1"], "average.last: expected a whole number of checkpoints >= 2, got 1"),
        ([], "average: task=average needs one of average.last=N (the last N epochs) or average.best=N"),
        (
            ["average.last=3"],
            "average.last=3: {dir} holds 2 epoch checkpoints; train with checkpoint.save_top_k=-1 to keep every epoch",
        ),
    ],
)
def test_bad_averages_stop_in_one_line_before_any_run(trained: tuple, arguments: list[str], line: str) -> None:
    folder, uri, source = trained
    before = [(r.info.run_id, r.info.status) for r in all_runs(uri)]
    result = dlrun_in_process(["task=average", f"ckpt={source.info.run_id}", *arguments, f"tracking.uri={uri}"], folder)
    checkpoints = Path(source.data.tags["dlrun.output_dir"]) / "checkpoints"
    assert (result.returncode, result.error) == (2, line.format(dir=checkpoints)), result.describe()
    assert [(r.info.run_id, r.info.status) for r in all_runs(uri)] == before
