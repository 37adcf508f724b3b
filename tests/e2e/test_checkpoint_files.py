"""What dlrun writes as checkpoint files: plain data only (weights_only loads), written whole or not at all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from dlrun.callbacks.checkpointing import AtomicCheckpointIO, CheckpointWriteError, ModelCheckpoint, write_atomically
from dlrun.config.plain import plain
from dlrun.models.mlp import MLP
from dlrun.objectives.classification import ClassificationModule
from helpers import REPO


def loaders() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 4, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def fit_one_epoch(module: pl.LightningModule, folder: Path) -> Path:
    """Fit one tiny epoch with dlrun's checkpoint callback; return the checkpoint it wrote."""
    checkpoint = ModelCheckpoint(dirpath=folder, filename="epoch{epoch:03d}", monitor="val/acc", mode="max")
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[checkpoint], logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, train_dataloaders=loaders(), val_dataloaders=loaders())
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    return Path(checkpoint.best_model_path)


def test_plain_turns_containers_into_lists_and_dicts() -> None:
    cfg = OmegaConf.create({"w": [1, 2], "d": {"a": [3]}, "ref": "${w}"})
    assert plain(cfg) == {"w": [1, 2], "d": {"a": [3]}, "ref": [1, 2]}
    nested = {"x": (cfg.w, 1), "t": torch.zeros(2)}
    converted = plain(nested)
    assert converted["x"] == ([1, 2], 1) and type(converted["x"][0]) is list
    assert converted["t"] is nested["t"]
    untouched = {"a": [1, {"b": 2}]}
    assert plain(untouched) is untouched  # nothing to convert: no copy of a large state dict


def test_class_weights_from_the_config_reach_the_checkpoint_as_plain_data(tmp_path: Path) -> None:
    # What Hydra hands the constructor for `objective.class_weights=[1,1,2]`: a ListConfig.
    weights = OmegaConf.create({"class_weights": [1.0, 1.0, 2.0]}).class_weights
    net = MLP(input_shape=[1, 4, 4], num_classes=3, hidden_sizes=OmegaConf.create([8]))
    module = ClassificationModule(net, lambda p: torch.optim.SGD(p, lr=0.1), num_classes=3, class_weights=weights)
    assert type(module.hparams.class_weights) is list
    path = fit_one_epoch(module, tmp_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["class_weights"] == [1.0, 1.0, 2.0]
    assert torch.equal(checkpoint["state_dict"]["loss_fn.weight"], torch.tensor([1.0, 1.0, 2.0]))


class UserModule(pl.LightningModule):
    """A user's plain LightningModule that keeps its whole DictConfig as hyperparameters."""

    def __init__(self, cfg: object) -> None:
        super().__init__()
        self.save_hyperparameters(cfg)
        self.layer = torch.nn.Linear(16, 3)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.layer(batch[0].flatten(1)), batch[1])

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self.log("val/acc", (self.layer(batch[0].flatten(1)).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_user_module_with_dictconfig_hyperparameters_loads_weights_only(tmp_path: Path) -> None:
    module = UserModule(OmegaConf.create({"sizes": [8, 4], "opt": {"betas": [0.9, 0.99]}}))
    path = fit_one_epoch(module, tmp_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"] == {"sizes": [8, 4], "opt": {"betas": [0.9, 0.99]}}
    assert "hparams_type" not in checkpoint
    restored = UserModule.load_from_checkpoint(path, weights_only=True)
    assert list(restored.hparams.sizes) == [8, 4]


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "epoch000.ckpt"
    write_atomically({"state_dict": {"w": torch.zeros(3)}}, path)
    write_atomically({"state_dict": {"w": torch.ones(3)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["epoch000.ckpt"]  # no temporary file left


def test_write_into_a_read_only_folder_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root writes into read-only folders; sysfs refuses new files even to root
        folder = Path("/sys/dlrun-read-only")
    try:
        with pytest.raises(CheckpointWriteError, match=rf"^{folder / 'last.ckpt'}: cannot write checkpoint \("):
            write_atomically({"x": 1}, folder / "last.ckpt")
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_full_disk_keeps_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    """A file-size limit (``ulimit -f``) fails the write the way a full disk does, mid-file."""
    path = tmp_path / "epoch000.ckpt"
    write_atomically({"w": torch.zeros(10)}, path)
    before = path.read_bytes()
    code = textwrap.dedent(
        f"""
        import resource, signal, torch
        from dlrun.callbacks.checkpointing import CheckpointWriteError, write_atomically
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed, as with ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            write_atomically({{"w": torch.zeros(1_000_000)}}, __import__("pathlib").Path({str(path)!r}))
        except CheckpointWriteError as err:
            print("ERROR", err)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith(f"ERROR {path}: cannot write checkpoint ("), proc.stdout + proc.stderr
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["epoch000.ckpt"]


def refusal(path: Path) -> BaseException:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch raises is what gets described
        return err
    raise AssertionError(f"{path} loaded")


def test_unreadable_checkpoints_are_described_in_full(tmp_path: Path) -> None:
    from dlrun.tasks.checkpoints import describe_unreadable

    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(10_000)}}, good)
    data = good.read_bytes()
    files = {
        "random.ckpt": os.urandom(5000).replace(b"PK", b"pk").lstrip(b"\x80") or b"x",
        "truncated.ckpt": data[: len(data) // 2],
        "empty.ckpt": b"",
        "notes.ckpt": b"epoch 3: loss 0.12\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "module.ckpt")
    said = {name: describe_unreadable(tmp_path / name, refusal(tmp_path / name)) for name in [*files, "module.ckpt"]}
    assert re.fullmatch(
        r"not a checkpoint \(\d+ bytes of neither a zip archive nor a pickle: random or foreign bytes\)",
        said["random.ckpt"],
    )
    assert said["truncated.ckpt"].startswith(
        f"truncated or damaged checkpoint ({len(data) // 2} bytes; the end of the zip"
    )
    assert said["empty.ckpt"] == "empty file (0 bytes), not a checkpoint"
    assert said["notes.ckpt"] == "not a checkpoint (a text file, 19 bytes)"
    assert said["module.ckpt"].startswith(
        "holds Python objects, not only tensors and plain data (torch.nn.modules.linear.Linear)"
    )
    for line in said.values():
        assert "\x1b" not in line and "\n" not in line and len(line) < 200


PRESETS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_writes_checkpoints_of_plain_data(tmp_path: Path, preset: str) -> None:
    """Each shipped preset, a tiny training: every checkpoint it leaves loads with ``weights_only=True``."""
    from helpers import dlrun

    result = dlrun([f"experiment={preset}", *TINY, "tracking=none"], tmp_path, timeout=900)
    assert result.returncode == 0, result.describe()
    paths = list(tmp_path.rglob("*.ckpt"))
    assert paths, result.describe()
    for path in paths:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert "state_dict" in checkpoint and "hparams_type" not in checkpoint
