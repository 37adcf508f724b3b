"""The Python API: dlrun.run / dlrun.load / dlrun.inspect, and bit-identical round trips of a trained model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, dlrun_env
from trained_runs import TrainedRun, trained_mnist


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    return trained_mnist(tmp_path_factory.getbasetemp() / "shared_runs")


@pytest.fixture(scope="module")
def test_images() -> torch.Tensor:
    """The first 64 official test images, normalized as the model sees them."""
    from dlrun.data.idx import read_idx
    from dlrun.data.mnist import normalize
    from helpers import MNIST

    return normalize(read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[:64])


def test_import_and_help_stay_light() -> None:
    """`import dlrun` and `dlrun --help` import neither Lightning nor MLflow; the API is lazy."""
    code = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('HEAVY', sorted(m for m in ('pytorch_lightning', 'mlflow')"
        " if m in sys.modules)))\n"
        "import dlrun\n"
        "assert callable(dlrun.run) and callable(dlrun.load) and 'pytorch_lightning' not in sys.modules\n"
        "from dlrun.cli import main\n"
        "sys.argv = ['dlrun', '--help']\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=dlrun_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


def test_models_import_torch_only() -> None:
    """The networks are plain torch modules: importing them loads none of Lightning, Hydra, MLflow, OmegaConf."""
    heavy = ("pytorch_lightning", "lightning", "hydra", "mlflow", "omegaconf")
    code = f"import sys, dlrun.models.mlp, dlrun.models.cnn; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_returns_the_task_result(mnist_run: TrainedRun) -> None:
    """dlrun.run trained with the CLI's composition: a FINISHED run whose record matches what it returned."""
    run = mnist_run.client().get_run(mnist_run.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mnist-mlp"
    assert run.data.params["model.hidden_sizes"] == "[64]"
    assert (mnist_run.output_dir / ".hydra" / "config.yaml").is_file()
    assert 0.5 < mnist_run.metrics["test/acc"] <= 1.0


def test_load_gives_bit_identical_outputs(mnist_run: TrainedRun, test_images: torch.Tensor) -> None:
    """Checkpoint path, run id, runs:/ID and the logged MLflow model all compute exactly the same outputs."""
    import mlflow.pytorch

    import dlrun

    by_path = dlrun.load(mnist_run.best_checkpoint)
    by_id = dlrun.load(mnist_run.run_id, tracking_uri=mnist_run.uri, download_dir=mnist_run.root / "dl")
    by_uri = dlrun.load(f"runs:/{mnist_run.run_id}", tracking_uri=mnist_run.uri, download_dir=mnist_run.root / "dl2")
    module, cfg = by_id
    assert not module.training and cfg.model.hidden_sizes == [64]
    assert by_id.run_id == mnist_run.run_id and by_path.run_id == mnist_run.run_id
    with torch.no_grad():
        expected = module(test_images)
        assert torch.equal(by_path.module(test_images), expected)
        assert torch.equal(by_uri.module(test_images), expected)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(mnist_run.uri)
        try:
            logged = mlflow.pytorch.load_model(f"runs:/{mnist_run.run_id}/model")
        finally:
            mlflow.set_tracking_uri(previous)
        assert torch.equal(logged(test_images), expected)
    # The trained weights themselves: the best checkpoint's state dict, tensor for tensor.
    state = torch.load(mnist_run.best_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())


def test_inspect_activations_and_weights(mnist_run: TrainedRun, test_images: torch.Tensor) -> None:
    """Intermediate outputs by layer name (forward hooks) and parameters by name."""
    import dlrun

    module, _ = dlrun.load(mnist_run.best_checkpoint)
    acts = dlrun.inspect.activations(module, test_images[:5], layers=["net.layers.1", "net.layers.2", "net.layers.4"])
    assert acts["net.layers.1"].shape == (5, 64)
    assert torch.equal(acts["net.layers.2"], acts["net.layers.1"].relu())
    with torch.no_grad():
        assert torch.equal(acts["net.layers.4"], module(test_images[:5]))
    weights = dlrun.inspect.weights(module)
    assert weights["net.layers.1.weight"].shape == (64, 784)
    assert set(weights) == {n for n, _ in module.named_parameters()}
    with pytest.raises(KeyError, match="net.layers.1"):
        dlrun.inspect.activations(module, test_images[:2], layers=["net.layer.1"])


def test_pictures_are_artifacts(mnist_run: TrainedRun) -> None:
    """After test: confusion matrix and misclassified grid; per epoch (callbacks.histograms): histograms."""
    client = mnist_run.client()
    plots = {a.path for a in client.list_artifacts(mnist_run.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/misclassified.png"} <= plots
    histograms = {a.path for a in client.list_artifacts(mnist_run.run_id, "plots/histograms")}
    assert {"plots/histograms/weights_epoch_000.png", "plots/histograms/activations_epoch_000.png"} <= histograms
    png = Path(client.download_artifacts(mnist_run.run_id, "plots/confusion_matrix.png", str(mnist_run.root / "png")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
