"""Reader for the IDX format of the original MNIST files (gzip'd or plain)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from dlrun.data.errors import DataError

# IDX type codes (third magic byte) and the numpy dtype they hold.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, expected_magic: int | None = None) -> torch.Tensor:
    """Read an IDX file into a tensor of shape ``dims``; every fault names ``path``."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != 0 or type_code not in _DTYPES or (expected_magic is not None and magic != expected_magic):
        want = f", expected {expected_magic}" if expected_magic is not None else ""
        raise DataError(f"{path}: wrong magic number {magic}{want}: not an IDX file of the right kind")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DataError(f"{path}: header truncated ({len(raw)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = len(raw) - header_end
    if body != expected:
        raise DataError(f"{path}: body has {body} bytes, header {list(dims)} needs {expected}")
    array = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(dims)
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: corrupt or truncated gzip ({err})") from err
