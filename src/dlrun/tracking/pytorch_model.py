"""The trained network as an MLflow PyTorch model (``runs:/RUN_ID/model``), loadable without dlrun's CLI."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

MODEL_NAME = "model"


@contextmanager
def _logging_target(uri: str, experiment_id: str) -> Iterator[None]:
    """MLflow's model logging reads the global tracking URI and experiment; point both at the run for the call."""
    from dlrun._upstream import mlflow_tracking_uri

    previous_experiment = os.environ.get("MLFLOW_EXPERIMENT_ID")
    # Without this, MLflow 3 files the logged model under the store's Default experiment, not the run's.
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    try:
        with mlflow_tracking_uri(uri):
            yield
    finally:
        if previous_experiment is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = previous_experiment


def log_pytorch_model(run: Any, net: torch.nn.Module, example: torch.Tensor) -> Any:
    """Log a CPU copy of ``net`` (eval mode) as model ``model`` of the run, with signature and input example.

    Requirements are pinned to the running torch and mlflow instead of inferred (inference loads the
    model in a subprocess and costs many seconds).
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    cpu_net = copy.deepcopy(net).cpu().eval()
    example = example[:4].detach().cpu()
    with torch.no_grad():
        output = cpu_net(example)
    signature = infer_signature(example.numpy(), output.numpy())
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
    with _logging_target(run.tracking_uri, run.experiment_id):
        return mlflow.pytorch.log_model(
            cpu_net,
            name=MODEL_NAME,
            run_id=run.run_id,
            signature=signature,
            input_example=example.numpy(),
            pip_requirements=requirements,
        )


def log_network(run: Any, net: torch.nn.Module, example: Any) -> bool:
    """Log ``net`` of an open ``TrackedRun`` when its input is a single tensor; False when it was skipped.

    Networks that take several tensors (a seq2seq's source, lengths, target) cannot be served by MLflow's
    PyTorch flavor; their checkpoints and ``dlrun.load`` are the way to reuse them.
    """
    if not isinstance(example, torch.Tensor):
        return False
    log_pytorch_model(run, net, example)
    return True
