"""Token streams for language models: one long stream cut into parallel rows, read in consecutive windows.

A split's tokens ``t_0 t_1 ... t_{N-1}`` become ``num_streams`` rows of equal length ``L = N // num_streams``
(the last ``N mod num_streams`` tokens are dropped); row ``i`` holds ``t_{iL} ... t_{iL+L-1}``. An epoch
reads every row left to right in windows: window ``k`` has inputs ``rows[:, s_k : s_k + n_k]`` and
next-token targets ``rows[:, s_k + 1 : s_k + 1 + n_k]`` with ``s_{k+1} = s_k + n_k``, so window ``k + 1`` of
row ``i`` continues window ``k`` of row ``i`` and every token of a row after its first is a target
exactly once per epoch. Every epoch starts at position 0 of every row (``LMBatch.start == 0``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Sampler


@dataclass
class LMBatch:
    """One window of every stream of a rank.

    - ``tokens``: ``(streams, length)`` input ids;
    - ``target``: ``(streams, length)`` the next token of each input;
    - ``start``: the window's position in its rows (0 = first window of the epoch; a window that
      continues the previous one starts where that one ended).
    """

    tokens: torch.Tensor
    target: torch.Tensor
    start: int

    def __len__(self) -> int:
        return self.tokens.size(0)

    @property
    def end(self) -> int:
        """Where the next window of the same rows starts."""
        return self.start + self.tokens.size(1)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LMBatch:
        """The same batch on ``device`` (Lightning moves batches itself; this is for plain loops)."""
        return LMBatch(
            self.tokens.to(device, non_blocking=non_blocking),
            self.target.to(device, non_blocking=non_blocking),
            self.start,
        )

    def pin_memory(self) -> LMBatch:
        """Page-locked copy, for DataLoader(pin_memory=True)."""
        return LMBatch(self.tokens.pin_memory(), self.target.pin_memory(), self.start)


def cut_streams(ids: torch.Tensor, num_streams: int, world_size: int = 1, rank: int = 0) -> torch.Tensor:
    """Rows ``(num_streams, L)`` of this rank out of a 1-d ``ids (N,)``.

    The stream is cut into ``world_size * num_streams`` rows; rank ``r`` takes rows
    ``r * num_streams ... (r + 1) * num_streams - 1``, so ranks read disjoint parts of the text
    and have the same number of windows.
    """
    if ids.dim() != 1:
        raise ValueError(f"ids: expected shape (N,), got {tuple(ids.shape)}")
    if num_streams < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"streams: need num_streams >= 1 and 0 <= rank < world_size, got {num_streams}, {rank}, {world_size}"
        )
    total = num_streams * world_size
    length = ids.numel() // total
    if length < 2:
        raise ValueError(f"{ids.numel()} tokens cannot fill {total} streams of at least 2 tokens")
    rows = ids[: total * length].view(total, length)
    return rows[rank * num_streams : (rank + 1) * num_streams].clone()


def window_bounds(
    length: int, bptt: int, random_bptt: bool = False, generator: torch.Generator | None = None
) -> list[tuple[int, int]]:
    """``(start, size)`` of the consecutive windows over rows of ``length`` tokens (``length - 1`` targets).

    Fixed: windows of ``bptt`` tokens, the last one shorter. Random (AWD-LSTM): the same number of
    windows, whose sizes are drawn as AWD-LSTM does (``bptt`` with probability 0.95, else ``bptt / 2``,
    then normal with standard deviation 5, at least 5 tokens) and scaled to cover the rows exactly; a
    fixed count keeps the epoch's length known to the trainer while window boundaries move every epoch.
    """
    if bptt < 1:
        raise ValueError(f"bptt: must be >= 1, got {bptt}")
    targets = length - 1
    count = math.ceil(targets / bptt)
    if not random_bptt or count < 2:
        return [(start, min(bptt, targets - start)) for start in range(0, targets, bptt)]
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    half = torch.rand(count, generator=gen) >= 0.95
    means = torch.where(half, bptt / 2, float(bptt))
    sizes = (means + 5 * torch.randn(count, generator=gen)).clamp(min=5)
    # Cumulative boundaries scaled onto [0, targets]: strictly increasing since count <= targets.
    edges = torch.cat([torch.zeros(1), sizes.cumsum(0)]) * (targets / float(sizes.sum()))
    bounds = edges.round().long().tolist()
    bounds[-1] = targets
    for k in range(1, count + 1):  # rounding may tie two edges: keep every window at least one token
        bounds[k] = max(bounds[k], bounds[k - 1] + 1)
    for k in range(count - 1, 0, -1):
        bounds[k] = min(bounds[k], bounds[k + 1] - 1)
    return [(bounds[k], bounds[k + 1] - bounds[k]) for k in range(count)]


class StreamWindows(Dataset[LMBatch]):
    """A rank's rows ``(streams, L)``, indexed by ``(start, size)`` of a window."""

    def __init__(self, rows: torch.Tensor) -> None:
        if rows.dim() != 2 or rows.size(1) < 2:
            raise ValueError(f"rows: expected shape (streams, L >= 2), got {tuple(rows.shape)}")
        self.rows = rows

    def __getitem__(self, window: tuple[int, int]) -> LMBatch:
        start, size = window
        if start < 0 or size < 1 or start + size >= self.rows.size(1):
            raise IndexError(f"window ({start}, {size}) outside rows of length {self.rows.size(1)}")
        # clone(): a window of its own, not a view that would drag the whole split along (workers, pinning).
        return LMBatch(
            self.rows[:, start : start + size].clone(), self.rows[:, start + 1 : start + 1 + size].clone(), start
        )

    def __len__(self) -> int:
        return self.rows.size(1) - 1


class WindowSampler(Sampler[tuple[int, int]]):
    """The epoch's windows in reading order; random sizes (``random_bptt``) are drawn from ``seed + epoch``.

    Lightning calls ``set_epoch``; the window count is the same every epoch.
    """

    def __init__(self, length: int, bptt: int, random_bptt: bool = False, seed: int = 0) -> None:
        self.length = length
        self.bptt = bptt
        self.random_bptt = random_bptt
        self.seed = seed
        self.epoch = 0
        window_bounds(length, bptt)  # validates bptt

    def set_epoch(self, epoch: int) -> None:
        """Select the windows of the given epoch."""
        self.epoch = epoch

    def windows(self) -> list[tuple[int, int]]:
        """``(start, size)`` of this epoch's windows."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return window_bounds(self.length, self.bptt, self.random_bptt, generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.windows())

    def __len__(self) -> int:
        return math.ceil((self.length - 1) / self.bptt)
