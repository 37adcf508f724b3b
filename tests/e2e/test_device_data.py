"""Device-resident MNIST (``data.on_device``) and on-device batch augmentation (``data.augment``), on the CPU.

On the CPU the "device" is the CPU itself: the tensors stay where they are, but the batches come from the
device path (one index copy per epoch, then ``index_select`` per batch), which must give exactly the
batches, and so the training, of the host path at the same seed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from dlrun.data.augment import random_affine
from dlrun.data.device_batches import DeviceBatches, parse_on_device, resident_device
from dlrun.data.mnist import MNISTDataModule, normalize


def cpu_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, **kwargs,
    )  # fmt: skip


def module(data_root: Path, on_device, augment: str = "none", trainer: pl.Trainer | None = None) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_root), seed=3, download=False, on_device=on_device, augment=augment)
    dm.prepare_data()
    dm.setup("fit")
    dm.trainer = trainer if trainer is not None else cpu_trainer()
    return dm


def normalized(dm: MNISTDataModule, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, torch.device("cpu"), 0), 0)


def test_on_device_values() -> None:
    assert parse_on_device("auto") == "auto"
    assert parse_on_device(True) is True and parse_on_device("false") is False
    for bad in ("gpu", 1, None):
        with pytest.raises(ValueError, match="on_device"):
            parse_on_device(bad)
    cuda = torch.device("cuda", 0)
    assert resident_device("auto", cuda) == cuda
    assert resident_device("auto", torch.device("cpu")) is None  # automatic only on a GPU trainer
    assert resident_device(True, torch.device("cpu")) == torch.device("cpu")
    assert resident_device(False, cuda) is None


def test_auto_on_a_cpu_trainer_keeps_the_host_path(data_root: Path) -> None:
    dm = module(data_root, "auto")
    assert dm.batch_device() is None
    assert isinstance(dm.train_dataloader(), DataLoader)
    forced = module(data_root, True)
    assert forced.batch_device() == torch.device("cpu")
    loader = forced.train_dataloader()
    assert isinstance(loader, DeviceBatches) and loader.device == torch.device("cpu")
    assert len(loader) == 430 and len(forced.val_dataloader()) == 5


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_device_batches_equal_the_host_batches(data_root: Path, split: str) -> None:
    host, device = module(data_root, False), module(data_root, True)
    for epoch in (0, 1):
        loaders = [getattr(dm, f"{split}_dataloader")() for dm in (host, device)]
        for loader in loaders:
            loader.sampler.set_epoch(epoch)  # what Lightning calls each epoch
        pairs = list(zip(*loaders, strict=True))
        assert len(pairs) == {"train": 430, "val": 5, "test": 10}[split]
        for host_batch, device_batch in pairs[:3] + pairs[-2:]:
            hx, hy = normalized(host, host_batch)
            dx, dy = normalized(device, device_batch)
            assert hx.shape == dx.shape and hx.dtype == dx.dtype == torch.float32
            assert torch.equal(hx, dx) and torch.equal(hy, dy)  # bit for bit: normalized once vs per batch


class OpCounter(TorchDispatchMode):
    """Counts the aten operators run while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def test_per_batch_work_is_two_index_selects_on_the_device(data_root: Path) -> None:
    dm = module(data_root, True)
    loader = dm.train_dataloader()
    iterator = iter(loader)
    with OpCounter() as epoch_start:
        first = next(iterator)  # the epoch's order is drawn, copied over once, split
    assert epoch_start.ops["randperm"] == 1
    with OpCounter() as steps:
        batches = [next(iterator) for _ in range(100)]
    # Per batch: one index_select for the images, one for the labels. Nothing else: no collate, no copy,
    # no index list built on the host, no normalization of the whole split.
    assert dict(steps.ops) == {"index_select": 200}, dict(steps.ops)
    assert all(x.dtype == torch.uint8 and x.shape == (128, 28, 28) for x, _ in [first, *batches])
    assert all(x.device == loader.device for x, _ in batches)


def fit_weights(data_root: Path, on_device, steps: int = 6) -> torch.Tensor:
    """Weights of a small MLP after ``steps`` training steps on ``on_device`` batches (seed 0)."""
    from dlrun.models.mlp import MLP
    from dlrun.objectives.classification import ClassificationModule

    pl.seed_everything(0, verbose=False)
    trainer = cpu_trainer(max_steps=steps, limit_val_batches=0)
    dm = module(data_root, on_device, trainer=trainer)
    net = MLP(input_shape=[1, 28, 28], num_classes=10, hidden_sizes=[32], dropout=0.0)
    objective = ClassificationModule(net, optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    trainer.fit(objective, datamodule=dm)
    return torch.cat([p.detach().flatten() for p in objective.parameters()])


def test_training_on_device_batches_equals_the_host_path(data_root: Path) -> None:
    host, device = fit_weights(data_root, False), fit_weights(data_root, True)
    assert torch.equal(host, device)
    untrained = fit_weights(data_root, True, steps=1)
    assert not torch.equal(untrained, device)  # the comparison can fail: the steps changed the weights


def test_validation_and_test_loops_take_device_batches(data_root: Path) -> None:
    from dlrun.models.mlp import MLP
    from dlrun.objectives.classification import ClassificationModule

    torch.manual_seed(0)
    net = MLP(input_shape=[1, 28, 28], num_classes=10, hidden_sizes=[16], dropout=0.0)
    objective = ClassificationModule(net, optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    scores = {}
    for on_device in (False, True):
        trainer = cpu_trainer(limit_val_batches=2, limit_test_batches=2)
        dm = module(data_root, on_device, trainer=trainer)
        validated = trainer.validate(objective, datamodule=dm, verbose=False)[0]
        scores[on_device] = (validated, trainer.test(objective, datamodule=dm, verbose=False)[0])
    assert scores[True] == scores[False]
    assert 0.0 < scores[True][1]["test/acc"] < 0.5  # an untrained network: near chance, and a real number


def test_training_steps_without_a_bar_never_wait_for_the_device(data_root: Path) -> None:
    """No ``.item()`` (a host-device sync on a GPU) per step: logged losses stay tensors when no bar reads them."""
    from dlrun.models.mlp import MLP
    from dlrun.objectives.classification import ClassificationModule

    class Watch(pl.Callback):
        def __init__(self) -> None:
            self.counter, self.steps = OpCounter(), 0

        def on_train_batch_start(self, *args) -> None:
            if self.steps == 5:  # after Lightning's first-step setup
                self.counter.__enter__()

        def on_train_batch_end(self, *args) -> None:
            self.steps += 1

        def on_train_epoch_end(self, *args) -> None:
            self.counter.__exit__(None, None, None)

    torch.manual_seed(0)
    net = MLP(input_shape=[1, 28, 28], num_classes=10, hidden_sizes=[16], dropout=0.0)
    objective = ClassificationModule(net, optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    watch = Watch()
    trainer = cpu_trainer(max_steps=45, limit_val_batches=0, log_every_n_steps=10, callbacks=[watch])
    trainer.fit(objective, datamodule=module(data_root, True, trainer=trainer))
    assert watch.steps == 45
    assert "train/loss" in trainer.callback_metrics  # the steps did log (every 10th and the last)
    assert "train/loss" not in trainer.progress_bar_metrics
    assert watch.counter.ops["_local_scalar_dense"] == 0, dict(watch.counter.ops)


# ---------------------------------------------------------------- augmentation


def shift_with_zeros(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` moved down ``dy`` and right ``dx`` pixels, uncovered pixels 0."""
    out = torch.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_shift_moves_each_digit_by_whole_pixels(data_root: Path) -> None:
    images = module(data_root, False).splits["train"].images[:64]
    moved = random_affine(images, "shift", torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and moved.dtype == torch.float32
    # Most digits sit inside the central 20x20 box: a shift of at most 2 pixels loses none of their ink.
    kept = moved.sum((1, 2)) == images.float().sum((1, 2))
    assert int(kept.sum()) >= 56, int(kept.sum())
    for original, shifted in zip(images.float(), moved, strict=True):
        candidates = [shift_with_zeros(original, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(shifted, c) for c in candidates)
    assert sum(not torch.equal(a, b) for a, b in zip(moved, images.float(), strict=True)) > 48  # 1 in 25 stays put
    again = random_affine(images, "shift", torch.Generator().manual_seed(0))
    assert torch.equal(moved, again)
    assert not torch.equal(moved, random_affine(images, "shift", torch.Generator().manual_seed(1)))


def test_shift_rotate_keeps_the_digit(data_root: Path) -> None:
    images = module(data_root, False).splits["train"].images[:64]
    turned = random_affine(images, "shift_rotate", torch.Generator().manual_seed(0))
    ink = images.float().sum((1, 2))
    assert torch.allclose(turned.sum((1, 2)), ink, rtol=0.08)  # bilinear resampling keeps the ink, roughly
    assert float(turned.min()) >= 0 and float(turned.max()) <= 255.001


def test_augment_applies_to_training_batches_only_and_is_seeded(data_root: Path) -> None:
    with pytest.raises(ValueError, match="augment"):
        MNISTDataModule(data_dir=str(data_root), augment="flip")
    trainer = cpu_trainer()
    dm = module(data_root, True, augment="shift", trainer=trainer)
    plain = module(data_root, True, trainer=cpu_trainer())
    batch = next(iter(dm.train_dataloader()))
    trainer.state.stage = "train"  # as inside the fit loop's training epoch
    assert trainer.training
    x, _ = dm.on_after_batch_transfer(batch, 0)
    x_again, _ = module(data_root, True, augment="shift", trainer=trainer).on_after_batch_transfer(batch, 0)
    assert torch.equal(x, x_again)  # same seed and epoch, same draws
    assert not torch.equal(x, normalize(batch[0]))
    trainer.state.stage = "validate"
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], normalize(batch[0]))
    assert plain.augment == "none"


# ---------------------------------------------------------------- text batches: lengths stay on the host


def test_text_batches_keep_source_lengths_on_the_host(tmp_path: Path) -> None:
    """Packing needs ``src_lengths`` on the host; moved to a GPU they would be copied back (a full sync) every step."""
    from dlrun.data.text_batching import TextBatch
    from dlrun.data.text_module import TextDataModule

    pairs = [
        ("ein hund läuft .", "a dog runs ."),
        ("eine katze .", "a cat ."),
        ("ein mann schläft hier .", "a man sleeps here ."),
    ]
    paths = {}
    for split in ("train", "val", "test"):
        for side, column in (("src", 0), ("tgt", 1)):
            path = tmp_path / f"{split}.{side}"
            path.write_text("".join(pair[column] + "\n" for pair in pairs))
            paths[f"{split}_{side}"] = str(path)
    dm = TextDataModule(**paths, batch_size=3, min_freq=1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)  # any other device shows the split
    assert isinstance(moved, TextBatch)
    assert moved.src.device.type == moved.tgt.device.type == moved.ids.device.type == "meta"
    assert moved.src_lengths.device.type == "cpu" and torch.equal(moved.src_lengths, batch.src_lengths)
    assert dm.transfer_batch_to_device((torch.zeros(2),), torch.device("meta"), 0)[0].device.type == "meta"
