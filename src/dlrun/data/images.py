"""Reading a folder of small grayscale images (e.g. hand-drawn digits) into one uint8 tensor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dlrun.data.errors import DataError

IMAGE_SUFFIXES = (".png",)


def read_image_folder(folder: str | Path, size: Sequence[int] = (28, 28)) -> tuple[list[str], torch.Tensor]:
    """File names (sorted) and images ``(n, height, width)`` uint8 of every PNG in ``folder``.

    Colour images are converted to grayscale; an image of another size stops with its name and size.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if folder.is_file():
        raise DataError(f"input={folder}: is a file; name the folder of .png images to classify")
    if not folder.is_dir():
        raise DataError(f"input={folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"input={folder}: no .png images in this folder")
    height, width = size
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                gray = image.convert("L")
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{path}: not a readable PNG image ({err})") from err
        if gray.size != (width, height):
            raise DataError(
                f"{path}: image is {gray.size[0]}x{gray.size[1]}, expected {width}x{height} (width x height)"
            )
        images.append(np.asarray(gray, dtype=np.uint8))
    return [p.name for p in files], torch.from_numpy(np.stack(images))
