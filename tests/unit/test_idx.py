"""IDX reader, checksums and the MNIST data module's file checks, on the real files and crafted bad ones."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrun.data import mnist
from dlrun.data.download import md5sum, verify_md5
from dlrun.data.errors import DataError
from dlrun.data.idx import read_idx
from dlrun.data.mnist import FILES, MNISTDataModule, load_split
from dlrun.errors import UserError
from helpers import MNIST_FILES, TEST_COUNTS, TRAIN_COUNTS


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file's bytes: zero, type code, ndim, big-endian dims, then the big-endian body."""
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


# ---------------------------------------------------------------- the real files


def test_real_training_files(official: dict) -> None:
    images, labels = official["train_images"], official["train_labels"]
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.uint8
    assert torch.bincount(labels.long(), minlength=10).tolist() == TRAIN_COUNTS
    assert int(images.min()) == 0 and int(images.max()) == 255
    # The first training digit of MNIST is a 5, and its pixel mass is a known fingerprint.
    assert int(labels[0]) == 5
    assert int(images[0].long().sum()) == 27525


def test_real_test_files(official: dict) -> None:
    images, labels = official["test_images"], official["test_labels"]
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,)
    counts = torch.bincount(labels.long(), minlength=10).tolist()
    assert counts[1] == 1135
    assert counts == TEST_COUNTS
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_real_files_match_published_md5(mnist_dir: Path) -> None:
    for name in MNIST_FILES:
        verify_md5(mnist_dir / name, FILES[name][0])  # raises on mismatch


def test_expected_magic_accepts_the_right_kind(mnist_dir: Path) -> None:
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", expected_magic=2049)
    assert labels.shape == (10000,)


# ---------------------------------------------------------------- crafted files that read


def test_plain_file_and_big_endian_types(tmp_path: Path) -> None:
    values = np.array([[1, -2, 70000], [2**31 - 1, 0, -(2**31)]], dtype=np.int32)
    path = tmp_path / "ints.idx"
    path.write_bytes(idx_bytes(values, type_code=0x0C))
    out = read_idx(path)
    assert out.dtype == torch.int32 and out.shape == (2, 3)
    assert out.tolist() == values.tolist()

    floats = np.array([0.5, -1.25, 3.0e5], dtype=np.float32)
    gz = write_gz(tmp_path / "floats.idx.gz", idx_bytes(floats, type_code=0x0D))
    assert read_idx(gz).tolist() == floats.tolist()


# ---------------------------------------------------------------- crafted faults


def test_wrong_magic_names_file_and_numbers(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "labels.gz", idx_bytes(np.arange(10, dtype=np.uint8)))  # magic 2049
    with pytest.raises(DataError) as info:
        read_idx(path, expected_magic=2051)
    message = str(info.value)
    assert str(path) in message
    assert "wrong magic number 2049" in message and "expected 2051" in message


def test_garbage_header_is_not_idx(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not an IDX file at all")
    with pytest.raises(DataError, match="wrong magic number") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_names_file(mnist_dir: Path, tmp_path: Path) -> None:
    real = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(real[: len(real) // 2])
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "truncated gzip" in message


def test_body_shorter_than_header_says_sizes(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros(100, dtype=np.uint8))[:-1]
    path = write_gz(tmp_path / "short.gz", data)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(info.value) == f"{path}: body has 99 bytes, header [100] needs 100"


def test_body_longer_than_header(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "long.gz", idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8)) + b"\0")
    with pytest.raises(DataError, match=r"body has 19 bytes, header \[2, 3, 3\] needs 18"):
        read_idx(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(info.value) == f"{path}: file not found"


def test_data_error_reaches_the_command_line_as_one_line(tmp_path: Path) -> None:
    """A bad file's DataError becomes dlrun's one line: the file and the fault, exit 1, no exception type."""
    from dlrun.cli import describe_error

    path = write_gz(tmp_path / "short.gz", idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))[:-1])
    with pytest.raises(UserError) as info:
        read_idx(path)
    assert describe_error(info.value, []) == (1, f"{path}: body has 17 bytes, header [2, 3, 3] needs 18")


def test_md5_mismatch_names_file_and_both_sums(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"not mnist")
    published = FILES["train-labels-idx1-ubyte.gz"][0]
    with pytest.raises(DataError) as info:
        verify_md5(path, published)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert md5sum(path) in message and published in message


# ---------------------------------------------------------------- the data module's file checks


@pytest.fixture
def short_labels_dir(mnist_dir: Path, tmp_path: Path) -> Path:
    """``<tmp>/mnist`` with the real images and a valid IDX train label file of only 100 labels."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_FILES:
        (folder / name).symlink_to(mnist_dir / name)
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.unlink()
    write_gz(labels, idx_bytes(np.arange(100, dtype=np.uint8) % 10))
    return folder


def test_module_rejects_altered_file_by_md5(short_labels_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(short_labels_dir.parent), download=False)
    dm.prepare_data()  # all four files are present: nothing to do
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert message.startswith(f"{short_labels_dir / 'train-labels-idx1-ubyte.gz'}: md5 ")
    assert "does not match the published" in message


def test_label_count_mismatch_names_both_files(short_labels_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = short_labels_dir / "train-labels-idx1-ubyte.gz"
    assert read_idx(labels, expected_magic=2049).shape == (100,)
    # Past the checksum (as if these were the published files), the pairing check must still catch it.
    monkeypatch.setitem(mnist.FILES, labels.name, (md5sum(labels), 2049))
    with pytest.raises(DataError) as info:
        load_split(short_labels_dir, "train")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and labels.name in message
    assert "60000 images" in message and "100 labels" in message


def test_missing_files_without_download_names_folder_and_files(mnist_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, folder / name)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert message.startswith(f"{folder}: missing ")
    assert "train-labels-idx1-ubyte.gz" in message and "t10k-images-idx3-ubyte.gz" in message
    assert "train-images-idx3-ubyte.gz" not in message and "t10k-labels-idx1-ubyte.gz" not in message
    assert "download is off" in message
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz"]
