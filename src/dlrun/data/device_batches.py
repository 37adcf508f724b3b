"""Batches drawn from tensors that live whole on the training device: no host work per step.

A data set small enough to sit on the accelerator (MNIST: 47 MB as uint8) is moved there once; each
epoch, the sampler's index batches (drawn on the host from ``seed + epoch``, exactly as the host path
draws them) cross to the device in one copy, and every batch is then an ``index_select`` on the
device. Per step the host only queues two kernels: no collate, no pinned copy, no transfer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from dlrun.data.samplers import EpochBatchSampler


def parse_on_device(value: bool | str) -> bool | str:
    """``data.on_device``: ``auto`` (on a CUDA trainer), ``true``/``false``; strings ``"true"``/``"false"`` too."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"on_device: must be auto, true or false, got {value!r}")


def resident_device(on_device: bool | str, root_device: torch.device | None) -> torch.device | None:
    """Where the data should live for batching (None: stay on the host and batch there).

    ``auto`` picks the trainer's device when it is a CUDA GPU; ``true`` picks the trainer's device
    whatever it is (the CPU too, which tests use); ``false`` keeps the host path.
    """
    if on_device is False:
        return None
    device = root_device if root_device is not None else torch.device("cpu")
    if on_device == "auto" and device.type != "cuda":
        return None
    return device


class DeviceBatches:
    """An iterable of batches ``(tensor[index] for tensor in tensors)`` with the indices on the tensors' device.

    ``sampler`` is a dlrun epoch sampler yielding index tensors; Lightning finds it at ``.sampler``
    and calls its ``set_epoch``, so epochs reshuffle exactly as with a ``DataLoader``.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], sampler: EpochBatchSampler) -> None:
        devices = {tensor.device for tensor in tensors}
        if len(devices) != 1:
            raise ValueError(f"tensors: must all live on one device, got {sorted(map(str, devices))}")
        self.tensors = tuple(tensors)
        self.sampler = sampler
        self.sampler.as_tensors = True
        self.batch_sampler = None  # as a DataLoader(batch_size=None) has: Lightning's loops read both attributes
        self.device = devices.pop()

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        batches = list(self.sampler)
        if not batches:
            return
        sizes = [len(batch) for batch in batches]
        # The epoch's whole order crosses in one copy; each batch's indices are then a view on the device.
        order = torch.cat(batches).to(self.device, non_blocking=self.device.type == "cuda")
        for index in order.split(sizes):
            yield tuple(tensor.index_select(0, index) for tensor in self.tensors)
