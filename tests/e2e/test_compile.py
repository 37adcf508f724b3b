"""``compile.*``: a network compiled with ``torch.compile`` trains, and its checkpoints load anywhere uncompiled."""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from dlrun.data.mnist import MNISTDataModule
from dlrun.models.mlp import MLP
from dlrun.objectives.classification import ClassificationModule
from dlrun.tasks.compile import (
    PREFIX,
    compile_network,
    compile_target,
    is_compiled,
    strip_compile_prefix,
    uncompiled,
)

# inductor generates C++ on the CPU; without a compiler the eager backend still checks graph capture.
BACKEND = "inductor" if shutil.which("gcc") or shutil.which("cc") else "eager"


def objective(seed: int = 0) -> ClassificationModule:
    torch.manual_seed(seed)
    net = MLP(input_shape=[1, 28, 28], num_classes=10, hidden_sizes=[32], dropout=0.0)
    return ClassificationModule(net, optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))


def test_modes_are_checked() -> None:
    with pytest.raises(ValueError, match="compile.mode"):
        compile_network(objective(), "fastest")


def test_compile_config_is_checked() -> None:
    from dlrun.errors import ConfigError
    from dlrun.tasks.compile import check_compile_config

    check_compile_config({"enabled": True, "mode": "reduce-overhead", "backend": "eager"})
    check_compile_config(None)
    for node, key in (
        ({"mode": "fast"}, "compile.mode"),
        ({"backend": "nvcc"}, "compile.backend"),
        ({"enabled": "yes"}, "compile.enabled"),
        ({"modes": "default"}, "compile.modes"),
    ):
        with pytest.raises(ConfigError, match=key):
            check_compile_config(node)


def test_plain_modules_compile_themselves() -> None:
    plain = torch.nn.Linear(3, 2)
    assert compile_target(plain) is plain
    module = objective()
    assert compile_target(module) is module.net
    compile_network(module, "default", backend="eager")
    assert is_compiled(module) and not is_compiled(objective())
    assert all(PREFIX not in key for key in module.state_dict())
    wrapped = torch.compile(torch.nn.Linear(3, 2), backend="eager")
    assert uncompiled(wrapped) is wrapped._orig_mod and uncompiled(plain) is plain
    assert list(strip_compile_prefix(wrapped.state_dict())) == ["weight", "bias"]


@pytest.mark.parametrize(
    "backend", ["eager", pytest.param(BACKEND, marks=pytest.mark.slow, id=f"{BACKEND}-slow")]
)  # eager: dynamo's graph capture, seconds; inductor: code generation too, tens of seconds on 2 cores
def test_compiled_mlp_trains_and_its_checkpoint_loads_uncompiled(data_root: Path, tmp_path: Path, backend: str) -> None:
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    module = objective()
    before = torch.cat([p.detach().clone().flatten() for p in module.parameters()])
    compile_network(module, "default", backend=backend)
    dm = MNISTDataModule(data_dir=str(data_root), download=False, batch_size=64, eval_batch_size=500, seed=0)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=8, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert counters["stats"]["unique_graphs"] >= 1  # the forward really ran through a compiled graph
    after = torch.cat([p.detach().flatten() for p in module.parameters()])
    assert not torch.equal(before, after)  # it trained

    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    keys = list(checkpoint["state_dict"])
    assert keys and all(PREFIX not in key for key in keys), keys
    fresh = objective(seed=1)
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: every key fits the uncompiled module
    assert not is_compiled(fresh)

    x = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)[0][:50]
    module.eval(), fresh.eval()
    with torch.no_grad():
        compiled_out, plain_out = module(x), fresh(x)
    assert torch.allclose(compiled_out, plain_out, atol=1e-5), (compiled_out - plain_out).abs().max()

    # The logged MLflow model and dlrun.load get copies/pickles: those come out uncompiled, same weights.
    copied = copy.deepcopy(module.net)
    assert getattr(copied, "_compiled_call_impl", None) is None
    buffer = io.BytesIO()
    torch.save(module.net, buffer)
    buffer.seek(0)
    pickled = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.allclose(pickled.eval()(x), plain_out, atol=1e-5)
    # Resuming into a compiled module takes the same state dict.
    again = objective(seed=2)
    compile_network(again, "default", backend=backend)
    again.load_state_dict(checkpoint["state_dict"])
    with torch.no_grad():
        assert torch.allclose(again.eval()(x), plain_out, atol=1e-5)


@pytest.mark.slow
def test_compiled_run_through_the_cli_evaluates_uncompiled(tmp_path: Path) -> None:
    """``compile.enabled=true``: the run compiles, tests, logs its model; eval and dlrun.load read its checkpoint
    uncompiled."""
    from helpers import dlrun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        f"tracking.uri={uri}",
        "callbacks.plots=false",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    ]
    run = dlrun(
        ["model=mlp", "model.hidden_sizes=[32]", "trainer.max_epochs=1", "trainer.limit_train_batches=20",
         "compile.enabled=true", f"compile.backend={BACKEND}", f"hydra.run.dir={tmp_path / 'run'}", *common],
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.describe()
    assert "compiled with torch.compile" in run.stderr
    trained = float(run.stdout.split("test/acc ")[1].split()[0])
    ckpt = next((tmp_path / "run" / "checkpoints").glob("epoch*.ckpt"))
    keys = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
    assert all(PREFIX not in key for key in keys)
    evaluated = dlrun(["task=eval", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", *common], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.describe()
    assert "compiled with torch.compile" not in evaluated.stderr
    assert float(evaluated.stdout.split("test/acc ")[1].split()[0]) == pytest.approx(trained, abs=1e-4)
