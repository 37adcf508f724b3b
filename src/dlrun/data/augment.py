"""Seeded random shifts and rotations of image batches, on the batch's device (MNIST's ``data.augment``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# name -> (largest shift in pixels, largest rotation in degrees)
AUGMENTS = {"none": (0, 0.0), "shift": (2, 0.0), "shift_rotate": (2, 10.0)}


def check_augment(name: str) -> str:
    """``name`` if it is one of ``AUGMENTS``; ValueError otherwise."""
    if name not in AUGMENTS:
        raise ValueError(f"augment: must be one of {', '.join(AUGMENTS)}, got {name!r}")
    return name


def random_affine(images: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``(batch, height, width)`` moved by its own random shift (and rotation).

    Shifts are whole pixels drawn from ``[-s, s]`` per axis, so ``shift`` moves pixels exactly (no
    blur); ``shift_rotate`` adds a rotation drawn uniformly from ``[-d, d]`` degrees (bilinear).
    Uncovered pixels become 0 (MNIST's background). Returns float pixel values of the same shape on
    the same device; ``generator`` lives on that device (draws stay on it).
    """
    max_shift, max_degrees = AUGMENTS[name]
    if images.dim() != 3:
        raise ValueError(f"images: expected (batch, height, width), got {list(images.shape)}")
    batch, height, width = images.shape
    device = images.device
    shift = torch.randint(-max_shift, max_shift + 1, (batch, 2), generator=generator, device=device).float()
    angle = (torch.rand(batch, generator=generator, device=device) * 2 - 1) * math.radians(max_degrees)
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output to input coordinates in [-1, 1]; one pixel is 2/size wide (align_corners=False).
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0] * 2 / width], 1), torch.stack([sin, cos, shift[:, 1] * 2 / height], 1)], 1
    )
    pixels = images.unsqueeze(1).float()
    grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
    mode = "bilinear" if max_degrees else "nearest"
    return F.grid_sample(pixels, grid, mode=mode, padding_mode="zeros", align_corners=False).squeeze(1)
